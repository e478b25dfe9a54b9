// Development check (not CI): the SAM 2 tracker in CVAT's real web UI (v2.51.0, or v2.73.0 with N after the
// rectangle), driven in chromium.
// A task of N frames is made over the API; then, in the UI: AI Tools -> Trackers -> our tracker -> Track, a
// rectangle drawn on frame 0, F (next frame) twice. The v2.51.0 UI (tools-control.tsx at dfd505e7,
// checkTrackedStates) calls the tracker with "init_tracking" (shapes, frame - 1) and "track" (states) when the frame
// advances, and moves the object to the shape each "track" answers. Passes when every lambda call answered 200, the
// object's rectangle on frames 1 and 2 (saved, read back over the API) is what the function answered, and each
// "track" call carried the state CVAT signed on the previous call.
// RECTANGLES=k (v2.60.0 and later only): k rectangles drawn in one gesture before N, around the object with margins
// 0, 6, 12, ... px (cvat-ai/cvat#10860 makes one track per rectangle); each must be tracked, every init_tracking call
// carrying k shapes and every track call k states. EXPECT=refused: k is past the tracker's SAM2_TRACKER_MAX_SHAPES;
// passes when every call answered 400, no track moved, and the UI's error notification is captured (its text is
// printed: what an annotator reads).
// Usage: NODE_PATH=<playwright-core's node_modules> node tests/e2e/tracker_ui.js SERVE.json FUNCTION_NAME IMAGE [FRAMES_DIR]
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [serveFile, fnName, imagePath, framesDir] = process.argv.slice(2);
const serve = JSON.parse(fs.readFileSync(serveFile, 'utf8'));
const auth = 'Basic ' + Buffer.from(`${serve.user}:${serve.password}`).toString('base64');
// FRAMES_DIR (optional): 0.png, 1.png, ... and boxes.json, the true [x1, y1, x2, y2] of the object on each frame; the
// rectangle is then drawn around it on frame 0, and each tracked frame's box must be within TRUTH_PX of the truth
const truth = framesDir ? JSON.parse(fs.readFileSync(path.join(framesDir, 'boxes.json'), 'utf8')) : null;
const FRAMES = truth ? truth.length : 3;
const TRUTH_PX = 3;
const RECTANGLES = Number(process.env.RECTANGLES || 1);
const REFUSED = process.env.EXPECT === 'refused';
const MARGIN = 6;
const t0 = Date.now();
const log = (m) => console.log(`[tracker-ui ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

async function api(method, url, body, headers = {}) {
  const init = { method, headers: { Authorization: auth, Accept: 'application/vnd.cvat+json', ...headers } };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
  const r = await fetch(serve.api + url, init);
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${url}: HTTP ${r.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : null;
}

async function makeTask() {
  const task = await api('POST', '/api/tasks', { name: 'labforge tracker ui', labels: [{ name: 'object' }] });
  const form = new FormData();
  form.append('image_quality', '95');
  for (let i = 0; i < FRAMES; i++) {
    const file = truth ? path.join(framesDir, `${i}.png`) : imagePath;
    form.append(`client_files[${i}]`, new Blob([fs.readFileSync(file)]), `${i}-${path.basename(file)}`);
  }
  const { rq_id: rq } = await api('POST', `/api/tasks/${task.id}/data`, form);
  for (let i = 0; i < 120; i++) {
    const state = await api('GET', `/api/requests/${rq}`);
    if (state.status === 'finished') break;
    if (state.status === 'failed') throw new Error(`task data: ${state.message}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const jobs = await api('GET', `/api/jobs?task_id=${task.id}`);
  const meta = await api('GET', `/api/tasks/${task.id}/data/meta`);
  return { taskId: task.id, jobId: jobs.results[0].id, width: meta.frames[0].width, height: meta.frames[0].height };
}

(async () => {
  const result = { ok: false, calls: [] };
  const { taskId, jobId, width, height } = await makeTask();
  log(`task ${taskId} (${FRAMES} frames ${width}x${height}), job ${jobId}`);
  const browser = await chromium.launch({
    executablePath: serve.chromium, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.on('response', async (r) => {
    if (r.url().includes('/api/lambda/functions/') && r.request().method() === 'POST') {
      const request = JSON.parse(r.request().postData() || '{}');
      result.calls.push({ status: r.status(), request, answer: await r.text().catch(() => '') });
    }
  });
  try {
    await page.goto(`${serve.ui}/auth/login`);
    await page.fill('input#credential', serve.user);
    await page.fill('input#password', serve.password);
    await page.click('.cvat-credentials-action-button');
    await page.waitForURL(/\/(tasks|projects|jobs)/, { timeout: 90000 });
    await page.goto(`${serve.ui}/tasks/${taskId}/jobs/${jobId}`);
    await page.waitForSelector('#cvat_canvas_background', { timeout: 90000 });
    await page.waitForTimeout(2000);

    const popover = page.locator('.cvat-tools-control-popover-content');
    for (let i = 0; i < 3 && !(await popover.isVisible()); i++) {
      await page.locator('.cvat-tools-control').first().hover();
      await page.waitForTimeout(800);
      if (!(await popover.isVisible())) await page.locator('.cvat-tools-control').first().click();
      await page.waitForTimeout(800);
    }
    await popover.getByRole('tab', { name: 'Trackers' }).click();
    await page.waitForTimeout(500);
    result.offered = (await popover.innerText()).includes(fnName);
    if (!result.offered) throw new Error(`tracker "${fnName}" not offered in AI Tools -> Trackers`);
    await popover.locator('.cvat-tools-track-button').click();
    await page.waitForTimeout(1000);

    const bg = await page.locator('#cvat_canvas_background').boundingBox();
    const at = (x, y) => [bg.x + (x * bg.width) / width, bg.y + (y * bg.height) / height];
    const v251 = (serve.release || 'v2.51.0') === 'v2.51.0';
    if (v251 && RECTANGLES > 1) throw new Error('v2.51.0 makes a track of each rectangle as it is drawn: RECTANGLES=1 there');
    for (let k = 0; k < RECTANGLES; k++) {
      const m = k * MARGIN;
      const [ax, ay] = truth ? at(Math.max(0, truth[0][0] - m), Math.max(0, truth[0][1] - m)) : at(width / 4 - m, height / 4 - m);
      const [bx, by] = truth ? at(Math.min(width - 1, truth[0][2] + m), Math.min(height - 1, truth[0][3] + m))
        : at((3 * width) / 4 + m, (3 * height) / 4 + m);
      await page.mouse.click(ax, ay);
      await page.mouse.move(bx, by, { steps: 8 });
      await page.mouse.click(bx, by);
      await page.waitForTimeout(500);
    }
    if (!v251) {
      // v2.60.0 and later (cvat-ai/cvat#10860): rectangles are prompts until N finishes the interaction, which makes
      // one track per rectangle (tools-control.tsx 624-673 at 7972cb4f2); v2.51.0 made the track on the rectangle
      await page.waitForTimeout(1000);
      await page.keyboard.press('n');
    }
    await page.waitForFunction((k) => document.querySelectorAll('.cvat-objects-sidebar-state-item').length === k, RECTANGLES,
      { timeout: 30000 });
    log(`${RECTANGLES} rectangle(s) drawn: as many track objects exist`);

    if (REFUSED) {
      await page.keyboard.press('f');
      const notice = page.locator('.ant-notification-notice').first();
      await notice.waitFor({ timeout: 240000 });
      result.notification = (await notice.innerText()).replace(/\s+/g, ' ').trim();
      await page.waitForTimeout(3000);
      await page.keyboard.press('Control+s');
      await page.waitForTimeout(3000);
      const annotations = await api('GET', `/api/jobs/${jobId}/annotations`);
      result.movedTracks = annotations.tracks.filter((tr) => tr.shapes.some((s) => s.frame > 0)).length;
      result.ok = result.calls.length > 0 && result.calls.every((c) => c.status === 400) && result.movedTracks === 0
        && result.calls[0].request.shapes && result.calls[0].request.shapes.length === RECTANGLES
        && /Tracker initialization error/.test(result.notification);
    } else {
      for (let frame = 1; frame < FRAMES; frame++) {
        const before = result.calls.length;
        await page.keyboard.press('f');
        const expected = frame === 1 ? 2 : 1;  // init_tracking + track on the first step, track after
        await page.waitForFunction(() => !document.querySelector('.cvat-tracking-notice'), null, { timeout: 240000 });
        for (let i = 0; i < 240 && result.calls.length < before + expected; i++) await page.waitForTimeout(500);
        await page.waitForTimeout(1500);
        log(`frame ${frame}: ${result.calls.length - before} lambda calls`);
      }
      await page.keyboard.press('Control+s');
      await page.waitForTimeout(3000);
      const annotations = await api('GET', `/api/jobs/${jobId}/annotations`);
      const round = (points) => points.map((v) => Math.round(v * 10) / 10);
      result.tracks = annotations.tracks.map((tr) => tr.shapes.map((s) => ({ frame: s.frame, points: round(s.points) })));
      result.trackFrames = result.tracks[0] || [];
      const tracked = result.calls.filter((c) => c.request.states);
      const answers = tracked.map((c) => JSON.parse(c.answer).shapes.map((s) => round(s.points)));
      result.statesRoundTrip = tracked.length === FRAMES - 1 && result.calls.every((c, i) => i === 0 || !c.request.states
        || JSON.stringify(c.request.states) === JSON.stringify(JSON.parse(result.calls[i - 1].answer).states));
      result.perCall = result.calls.map((c) => (c.request.states || c.request.shapes || []).length);
      const frames = [...Array(FRAMES - 1).keys()].map((i) => i + 1);
      // CVAT maps the i-th answered shape to the i-th tracked object; each saved track holds one of the answers
      const saved = result.tracks.length === RECTANGLES && result.tracks.every((track) => frames.every((f) => {
        const points = (track.find((s) => s.frame === f) || {}).points;
        return answers[f - 1].some((answer) => JSON.stringify(answer) === JSON.stringify(points));
      }));
      result.offTruth = truth ? result.tracks.map((track) => frames.map((f) => Math.max(
        ...((track.find((s) => s.frame === f) || {}).points || [Infinity]).map((v, i) => Math.abs(v - truth[f][i]))))) : [];
      result.ok = result.calls.length === FRAMES && result.calls.every((c) => c.status === 200)
        && result.calls[0].request.shapes && result.perCall.every((n) => n === RECTANGLES) && result.statesRoundTrip
        && saved && result.offTruth.flat().every((d) => d <= TRUTH_PX);
    }
  } catch (e) {
    result.error = e.message.split('\n')[0];
    await page.screenshot({ path: '/tmp/tracker-ui-failure.png' }).catch(() => {});
  }
  for (const c of result.calls) { c.request.image = undefined; c.answer = c.answer.slice(0, 300); }
  console.log(`RESULT ${JSON.stringify(result)}`);
  const what = REFUSED ? `${RECTANGLES} rectangles refused: ${result.calls.length} calls `
    + `(${result.calls.map((c) => c.status).join(',')}), tracks moved ${result.movedTracks}, the UI said "${result.notification}"`
    : `${RECTANGLES} rectangle(s): ${result.calls.length} calls (${result.calls.map((c) => c.status).join(',')}), `
    + `objects per call ${JSON.stringify(result.perCall)}, saved boxes of the first track `
    + `${JSON.stringify((result.trackFrames || []).map((s) => s.points))}`
    + (truth ? `, each track off the moving square by ${JSON.stringify(result.offTruth)} px` : '');
  console.log(`real CVAT ${serve.release || 'v2.51.0'}: tracker ${result.ok ? 'passed' : 'FAILED'}: ${what}`);
  await browser.close();
  process.exit(result.ok ? 0 : 1);
})();
