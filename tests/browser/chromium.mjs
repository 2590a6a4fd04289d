// Debian's Chromium, headless, as every browser test here launches it (the page test, and
// scripts/test-openwebui's chat page): flags that keep it off the network these machines do not
// have, a fresh profile each time, a Korean locale. Nothing is downloaded.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

export const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * A browser context in a fresh profile (`prefix` names its temporary directory), through the
 * given playwright-core `chromium`. `close()` also removes the profile. Throws with a hint when
 * Chromium cannot start.
 */
export async function launch(chromium, { prefix, viewport }) {
  const userDataDir = await mkdtemp(path.join(tmpdir(), prefix));
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: ARGS,
      viewport,
      locale: "ko-KR",
    });
    const close = async () => {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true });
    };
    return { context, close };
  } catch (err) {
    await rm(userDataDir, { recursive: true, force: true });
    throw new Error(`cannot launch Chromium at ${executablePath} (set CHROMIUM to override): ${err.message}`);
  }
}
