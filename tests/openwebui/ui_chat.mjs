// Open WebUI's chat page in headless Chromium, used as a person would: signed in (the token
// scripts/test-openwebui got), the service's model selected (?models=), a message typed in the
// chat box and sent with Enter; waits for the answer to finish (the regenerate button shows),
// then takes a screenshot.
//
// Usage: node tests/openwebui/ui_chat.mjs OPENWEBUI_URL TOKEN MODEL_ID SCREENSHOT.png PLAYWRIGHT_CORE_DIR [QUERY]
// QUERY is added to the page's URL, e.g. `tools=ID` selects a workspace tool for the chat.
// Uses Debian's Chromium (env CHROMIUM, default /usr/bin/chromium) through playwright-core (the
// one tests/browser installs); nothing is downloaded. Writes the page's HTML next to the
// screenshot (page.html) for debugging. Exits 0 when the answer was shown, 1 otherwise.

import { createRequire } from "node:module";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { launch } from "../browser/chromium.mjs";

const [base, token, modelId, shotArg, playwrightDir, query] = process.argv.slice(2);
if (!playwrightDir) {
  console.error("usage: node ui_chat.mjs OPENWEBUI_URL TOKEN MODEL_ID SCREENSHOT.png PLAYWRIGHT_CORE_DIR [QUERY]");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const { chromium } = require(path.resolve(playwrightDir));
const shot = path.resolve(shotArg);
const MESSAGE = "텀블러를 쓰면 뭐가 좋아?";

async function run(page) {
  const foreign = new Set();
  const origin = new URL(base).origin;
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:")) foreign.add(url);
  });
  // The frontend keeps its session token in localStorage.
  await page.addInitScript((t) => localStorage.setItem("token", t), token);
  await page.goto(`${base}/?models=${encodeURIComponent(modelId)}${query ? "&" + query : ""}`, { waitUntil: "load" });
  const input = page.locator("#chat-input");
  await input.waitFor({ state: "visible", timeout: 90_000 });
  console.log(`chat page loaded (${page.url()})`);
  // A first visit may open a "what's new" dialog over the page.
  await page.keyboard.press("Escape");
  await page.waitForTimeout(500);

  const selected = await page.locator("#model-selector-0-button, [id^=model-selector]").first().textContent().catch(() => "");
  console.log(`model selector shows ${JSON.stringify((selected || "").trim().slice(0, 80))}`);

  await input.click();
  await page.keyboard.type(MESSAGE);
  await page.keyboard.press("Enter");
  console.log(`sent ${JSON.stringify(MESSAGE)}`);

  // Done when the answer has text and its toolbar (regenerate) is shown.
  await page.waitForFunction(
    () => {
      const answers = document.querySelectorAll("#response-content-container");
      const last = answers[answers.length - 1];
      return last && last.textContent.trim().length > 0 && document.querySelector(".regenerate-response-button");
    },
    null,
    { timeout: 120_000, polling: 250 },
  );
  const answer = await page.locator("#response-content-container").last().textContent();
  console.log(`answer shown: ${answer.trim().length} characters: ${JSON.stringify(answer.trim().slice(0, 100))}`);
  // Let the title and follow-ups arrive before the screenshot.
  await page.waitForTimeout(3000);
  if (foreign.size) console.log(`requests to other origins (failed offline): ${[...foreign].slice(0, 5).join(" ")}`);
}

async function main() {
  let browser;
  try {
    browser = await launch(chromium, { prefix: "leafresh-openwebui-chromium-", viewport: { width: 1280, height: 800 } });
  } catch (err) {
    console.error(err.message);
    return 1;
  }
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  try {
    await run(page);
    return 0;
  } catch (err) {
    console.error(err.stack || String(err));
    return 1;
  } finally {
    await page.screenshot({ path: shot }).catch((e) => console.error(`screenshot failed: ${e.message}`));
    await writeFile(path.join(path.dirname(shot), "page.html"), await page.content().catch(() => "")).catch(() => {});
    await browser.close();
  }
}

process.exitCode = await main();
