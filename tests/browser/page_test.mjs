// Drives the service's test page (GET /) in headless Chromium, the way a person would:
// asks base-info for three challenges and checks the cards, the streamed text, and that
// validation errors reach the error box; then, in the chat tab (the OpenAI-compatible API), holds
// a two-turn conversation and checks the streamed replies, the usage and an API error.
//
// Usage: node tests/browser/page_test.mjs BASE_URL SCREENSHOT.png
// (the chat tab's screenshot goes next to it, as SCREENSHOT_chat.png)
// Uses Debian's Chromium (env CHROMIUM, default /usr/bin/chromium) through playwright-core;
// nothing is downloaded. Exits 0 when every check passed, 1 with the failed check otherwise.

import { chromium } from "playwright-core";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { launch } from "./chromium.mjs";

const GENERATION_TIMEOUT_MS = 120_000;
const QUICK_TIMEOUT_MS = 30_000;
const CATEGORY_LABEL = "디지털 탄소";
const CATEGORY_CODE = "DIGITAL_CARBON";

const [baseArg, screenshotArg] = process.argv.slice(2);
if (!baseArg || !screenshotArg) {
  console.error("usage: node page_test.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const baseUrl = baseArg.replace(/\/+$/, "");
const screenshotPath = path.resolve(screenshotArg);

class CheckFailed extends Error {}
function check(condition, what) {
  if (!condition) throw new CheckFailed(what);
  console.log("ok - " + what);
}

async function text(page, selector) {
  return (await page.locator(selector).textContent()) ?? "";
}

// Waits until #cards holds `count` cards, but stops early if #error fills instead, so a server
// error fails the test with its message rather than with a bare timeout.
async function waitForCardsOrError(page, count, timeout) {
  await page.waitForFunction(
    (n) =>
      document.querySelectorAll("#cards .challenge-card").length === n ||
      document.getElementById("error").textContent.trim() !== "",
    count,
    { timeout, polling: 100 },
  ).catch(async () => {
    const cards = await page.locator("#cards .challenge-card").count();
    const state = await page.getAttribute("#status", "data-state");
    const streamed = ((await text(page, "#stream")) || "").slice(-200);
    throw new CheckFailed(
      `no ${count} cards within ${timeout / 1000} s (cards ${cards}, status ${state}, stream ends ${JSON.stringify(streamed)})`,
    );
  });
}

async function run(page) {
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  const foreignRequests = [];
  const origin = new URL(baseUrl).origin;
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(origin) && !url.startsWith("data:")) foreignRequests.push(url);
  });

  const response = await page.goto(baseUrl + "/", { waitUntil: "load" });
  check(response && response.status() === 200, `GET ${baseUrl}/ answers 200 (got ${response?.status()})`);

  await page.waitForFunction(() => /HTTP \d+/.test(document.getElementById("health-result").textContent), null, {
    timeout: QUICK_TIMEOUT_MS,
  });
  const health = await text(page, "#health-result");
  check(health.startsWith("HTTP 200"), `health section shows HTTP 200 (shows ${JSON.stringify(health.split("\n")[0])})`);

  const sessionId = await page.inputValue("#sessionId");
  check(sessionId.trim() !== "", `sessionId is prefilled (${sessionId})`);

  // --- base-info: three cards ---
  await page.fill("#location", "도시");
  await page.fill("#workType", "사무직");
  await page.selectOption("#category", { label: CATEGORY_LABEL });
  const started = Date.now();
  await page.click("#btn-base-info");
  console.log(`... base-info requested (location=도시, workType=사무직, category=${CATEGORY_LABEL}); waiting up to ${GENERATION_TIMEOUT_MS / 1000} s`);
  await waitForCardsOrError(page, 3, GENERATION_TIMEOUT_MS);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);

  const error = (await text(page, "#error")).trim();
  check(error === "", `#error is empty after base-info (shows ${JSON.stringify(error)})`);
  const cards = page.locator("#cards .challenge-card");
  check((await cards.count()) === 3, `#cards holds exactly 3 .challenge-card elements (after ${seconds} s)`);
  const streamed = (await text(page, "#stream")).trim();
  check(streamed.length > 0, `#stream received text (${streamed.length} chars: ${JSON.stringify(streamed.slice(0, 60))}…)`);
  const state = await page.getAttribute("#status", "data-state");
  check(state === "done", `#status says done (state ${state})`);
  for (let i = 0; i < 3; i++) {
    const card = cards.nth(i);
    const title = ((await card.locator(".card-title").textContent()) ?? "").trim();
    const category = ((await card.locator(".card-category").textContent()) ?? "").trim();
    check(title.length > 0, `card ${i + 1} has a title (${JSON.stringify(title)})`);
    check(category === CATEGORY_CODE, `card ${i + 1} category is ${CATEGORY_CODE} (got ${JSON.stringify(category)})`);
  }
  const recommend = (await text(page, "#recommend")).trim();
  console.log(`    recommend: ${JSON.stringify(recommend)}`);

  await mkdir(path.dirname(screenshotPath), { recursive: true });
  await page.screenshot({ path: screenshotPath, fullPage: true });
  const { size } = await stat(screenshotPath);
  check(size > 0, `full-page screenshot saved to ${screenshotPath} (${size} bytes)`);

  // --- base-info validation: HTTP 400 JSON, which EventSource only sees as a failed connection ---
  await page.fill("#location", "");
  await page.click("#btn-base-info");
  await page.waitForFunction(() => document.getElementById("error").textContent.includes("location은 필수입니다."), null, {
    timeout: QUICK_TIMEOUT_MS,
  }).catch(() => {});
  const validation = (await text(page, "#error")).trim();
  check(validation.includes("location은 필수입니다."), `empty location shows "location은 필수입니다." in #error (shows ${JSON.stringify(validation)})`);
  check((await cards.count()) === 0, "the previous cards were cleared");
  check((await page.getAttribute("#status", "data-state")) === "error", "#status says error");

  // --- free-text validation: an SSE `error` event inside an HTTP 200 stream ---
  await page.fill("#message", "");
  await page.click("#btn-free-text");
  await page.waitForFunction(() => document.getElementById("error").textContent.includes("message는 필수입니다."), null, {
    timeout: QUICK_TIMEOUT_MS,
  }).catch(() => {});
  const freeText = (await text(page, "#error")).trim();
  check(freeText.includes("message는 필수입니다."), `empty free-text message shows "message는 필수입니다." in #error (shows ${JSON.stringify(freeText)})`);

  await chatTab(page);

  check(pageErrors.length === 0, `no uncaught page errors (${pageErrors.join("; ") || "none"})`);
  check(foreignRequests.length === 0, `the page requested nothing outside ${origin} (${foreignRequests.join(", ") || "none"})`);
}

// The reply of the last assistant message in #chat-log, and its usage line.
async function waitForChatReplyOrError(page, replies, timeout) {
  await page.waitForFunction(
    (n) =>
      (document.querySelectorAll('#chat-log .chat-msg[data-role="assistant"]').length === n &&
        document.getElementById("chat-status").dataset.state === "done") ||
      document.getElementById("chat-error").textContent.trim() !== "",
    replies,
    { timeout, polling: 100 },
  ).catch(async () => {
    const state = await page.getAttribute("#chat-status", "data-state");
    const log = ((await text(page, "#chat-log")) || "").slice(-200);
    throw new CheckFailed(`no assistant reply ${replies} within ${timeout / 1000} s (status ${state}, log ends ${JSON.stringify(log)})`);
  });
  const error = (await text(page, "#chat-error")).trim();
  check(error === "", `#chat-error is empty after message ${replies} (shows ${JSON.stringify(error)})`);
  const reply = page.locator('#chat-log .chat-msg[data-role="assistant"]').nth(replies - 1);
  const replyText = ((await reply.locator(".chat-text").textContent()) ?? "").trim();
  check(replyText.length > 0, `assistant reply ${replies} has text (${replyText.length} chars: ${JSON.stringify(replyText.slice(0, 40))}…)`);
  const meta = ((await reply.locator(".chat-meta").textContent()) ?? "").trim();
  const usage = (await text(page, "#chat-usage")).trim();
  const promptTokens = Number(await page.getAttribute("#chat-usage", "data-prompt-tokens"));
  const completionTokens = Number(await page.getAttribute("#chat-usage", "data-completion-tokens"));
  check(promptTokens > 0 && completionTokens > 0, `usage shown: ${JSON.stringify(usage)}`);
  check(meta.includes("토큰"), `the reply carries its usage (${JSON.stringify(meta)})`);
  return { promptTokens, completionTokens };
}

async function chatTab(page) {
  await page.click('#tabs [data-tab="chat"]');
  check(await page.isVisible("#tab-chat"), "the chat tab shows its panel");
  check(!(await page.isVisible("#tab-recommend")), "the recommend panel is hidden");

  await page.waitForFunction(() => document.querySelectorAll("#chat-model option").length > 0, null, {
    timeout: QUICK_TIMEOUT_MS,
  }).catch(async () => {
    throw new CheckFailed(`the model list stayed empty (${JSON.stringify(await text(page, "#chat-models-result"))})`);
  });
  const models = await page.locator("#chat-model option").allTextContents();
  check(models.length > 0 && models.every((m) => m.trim() !== ""), `model dropdown filled from v1/models (${models.join(", ")})`);

  // Short answers: the tiny test model writes gibberish at a few ms per token.
  await page.fill("#chat-max-tokens", "40");
  await page.fill("#chat-system", "너는 친환경 챌린지를 추천하는 도우미야.");
  const first = "회사에서 할 수 있는 탄소 줄이기 챌린지를 추천해줘";
  await page.fill("#chat-message", first);
  await page.click("#btn-chat-send");
  console.log("... chat message 1 sent; waiting for the streamed reply");
  const one = await waitForChatReplyOrError(page, 1, GENERATION_TIMEOUT_MS);
  const userText = ((await page.locator('#chat-log .chat-msg[data-role="user"] .chat-text').first().textContent()) ?? "").trim();
  check(userText === first, `the sent message is in #chat-log (${JSON.stringify(userText)})`);
  check((await page.inputValue("#chat-message")) === "", "the message box was cleared");

  // The second message is shorter than the first, so only the history sent along with it (the
  // first message and the reply) can make its prompt the longer one.
  await page.fill("#chat-message", "하나 더");
  await page.press("#chat-message", "Enter");
  const two = await waitForChatReplyOrError(page, 2, GENERATION_TIMEOUT_MS);
  check(
    two.promptTokens > one.promptTokens,
    `the second prompt carries the conversation (${two.promptTokens} > ${one.promptTokens} tokens)`,
  );
  check((await page.locator("#chat-log .chat-msg").count()) === 4, "#chat-log holds the 4 messages of the conversation");

  const chatScreenshot = screenshotPath.replace(/(\.png)?$/i, "_chat.png");
  await rm(chatScreenshot, { force: true });
  await page.screenshot({ path: chatScreenshot, fullPage: true });
  const { size } = await stat(chatScreenshot);
  check(size > 0, `full-page screenshot of the chat tab saved to ${chatScreenshot} (${size} bytes)`);

  // An API error reaches the visible error box: a model the server does not have (as after the
  // server was restarted with another model while the page stayed open).
  await page.evaluate(() => {
    const select = document.getElementById("chat-model");
    select.append(new Option("no-such-model", "no-such-model"));
    select.value = "no-such-model";
  });
  await page.fill("#chat-message", "이 모델은 없어요");
  await page.click("#btn-chat-send");
  await page.waitForFunction(() => document.getElementById("chat-error").textContent.trim() !== "", null, {
    timeout: QUICK_TIMEOUT_MS,
  }).catch(() => {});
  const apiError = (await text(page, "#chat-error")).trim();
  check(apiError.startsWith("[404]") && apiError.includes("no-such-model"), `an unknown model shows the API's 404 message in #chat-error (${JSON.stringify(apiError)})`);
  check(await page.isVisible("#chat-error"), "#chat-error is visible");
  check((await page.getAttribute("#chat-status", "data-state")) === "error", "#chat-status says error");
  check((await page.inputValue("#chat-message")) === "이 모델은 없어요", "the failed message is back in the message box");
}

async function main() {
  let browser;
  try {
    browser = await launch(chromium, { prefix: "leafresh-page-test-", viewport: { width: 1100, height: 900 } });
  } catch (err) {
    console.error("FAIL: " + err.message);
    return 1;
  }
  try {
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    await run(page);
    console.log("PASS: test page works against " + baseUrl);
    return 0;
  } catch (err) {
    if (err instanceof CheckFailed) console.error("FAIL: " + err.message);
    else console.error("FAIL: " + (err.stack || err));
    return 1;
  } finally {
    await browser.close();
  }
}

process.exitCode = await main();
