// Development check (not CI): where our SAM 2 interactor's masks land in CVAT's real web UI (issue 27), with the
// checkpoint whose masks are blobs at the prompt (testlab/sam2/placed_checkpoint.py). Run by
// tests/e2e/cvat_check.sh interactor-ui IMAGE (CVAT_E2E_RELEASE picks the release). In one task made in the UI:
//   box     (every release) a box around an object away from the corner, N, Save: the saved mask's set pixels within
//           2 px of what the function answered (read from CVAT's answer to the UI's lambda call);
//   roi     (v2.70.0 and later) the same with one click inside a region of interest;
//   delete  (v2.60.0 and later, where each prompt has a delete button) one click, its prompt deleted: the last call
//           (no prompts) answered 200, no error notification, and N then Save adds no shape.
// Usage: NODE_PATH=<serve.json's node_path> node tests/e2e/interactor_ui.js SERVE.json FUNCTION_NAME IMAGE(640x480)
const fs = require('fs');

const [serveFile, fnName, imagePath] = process.argv.slice(2);
const serve = JSON.parse(fs.readFileSync(serveFile, 'utf8'));
const ui = require(serve.ui_helpers);
const SIZE = [640, 480];
const release = serve.release || 'v2.51.0';
const atLeast = (v) => { const a = release.slice(1).split('.').map(Number); const b = v.split('.').map(Number);
  return a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] >= b[2]; };
const t0 = Date.now();
const log = (m) => console.log(`[interactor-ui ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

// The set pixels' bounds of an answer as the UI receives it: shapes form (RLE + box), or mask with optional bounds.
function answeredBounds(answer) {
  if (Array.isArray(answer.shapes)) {
    const masks = answer.shapes.filter((s) => s.type === 'mask' && s.points.length >= 6);
    return masks.length ? ui.decodeMask(masks[0].points).setBounds : null;
  }
  const rows = answer.mask || [];
  const [dx, dy] = answer.bounds ? answer.bounds : [0, 0];
  let b = null;
  rows.forEach((row, y) => row.forEach((v, x) => {
    if (!v) return;
    b = b ? [Math.min(b[0], x + dx), Math.min(b[1], y + dy), Math.max(b[2], x + dx), Math.max(b[3], y + dy)]
      : [x + dx, y + dy, x + dx, y + dy];
  }));
  return b;
}

const near = (a, b) => !!a && !!b && a.every((v, i) => Math.abs(v - b[i]) <= 2);

(async () => {
  const browser = await ui.launch(serve.chromium);
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const calls = [];
  context.on('response', async (r) => {
    if (r.url().includes('/api/lambda/functions/') && r.request().method() === 'POST') {
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      calls.push({ status: r.status(), request: JSON.parse(r.request().postData() || '{}'), body });
    }
  });
  const results = [];
  let job; let jobId; let popover;
  const waitCall = () => job.waitForResponse((r) => r.url().includes('/api/lambda/functions/')
    && r.request().method() === 'POST', { timeout: 120000 });
  const errors = async () => job.locator('.ant-notification-notice-error').count();
  const shapesSaved = async () => (await ui.readAnnotations(job.request, serve.ui, jobId)).shapes;
  async function startInteractor({ startWithBox, roi }) {
    popover = await ui.openInteractors(job);
    if (!(await ui.chooseFunction(job, popover, fnName))) throw new Error(`${fnName} not offered`);
    await ui.setStartWithBox(popover, startWithBox);
    if (roi) await ui.setRegionOfInterest(popover, roi);
    await ui.interact(job, popover);
  }
  async function finishAndSave() {
    await ui.finish(job);
    await job.waitForTimeout(2000);
    return ui.save(job, jobId);
  }
  let rc = 1;
  try {
    await ui.login(page, serve.ui, serve.user, serve.password);
    const made = await ui.createTaskInUi(page, serve.ui, { name: 'placement', label: 'object', imagePath });
    jobId = made.jobId;
    job = await ui.openJob(context, `${serve.ui}/tasks/${made.taskId}/jobs/${jobId}`, log);

    // box: an object away from the top-left corner
    await startInteractor({ startWithBox: true });
    let call = waitCall();
    await ui.drawBox(job, [380, 280, 480, 380], SIZE);
    log(`box call: ${(await call).status()}`);
    await job.waitForTimeout(1500);
    let answer = calls[calls.length - 1];
    let status = await finishAndSave();
    let shapes = await shapesSaved();
    let saved = shapes.length ? ui.decodeMask(shapes[shapes.length - 1].points).setBounds : null;
    let want = answer && answer.body ? answeredBounds(answer.body) : null;
    results.push({ name: 'box', ok: answer.status === 200 && status === 200 && shapes.length === 1 && near(saved, want),
      line: `box -> saved ${JSON.stringify(saved)}, answered ${JSON.stringify(want)}` });

    if (atLeast('2.70.0')) { // roi: x, y, width, height
      const roi = [300, 200, 260, 220];
      await startInteractor({ startWithBox: false, roi });
      call = waitCall();
      await ui.clickPoint(job, 400, 300, SIZE);
      log(`roi call: ${(await call).status()}`);
      await job.waitForTimeout(1500);
      answer = calls[calls.length - 1];
      status = await finishAndSave();
      shapes = await shapesSaved();
      saved = shapes.length === 2 ? ui.decodeMask(shapes[1].points).setBounds : null;
      want = answer && answer.body ? answeredBounds(answer.body) : null;
      const inside = saved && saved[0] >= roi[0] && saved[1] >= roi[1] && saved[2] < roi[0] + roi[2] && saved[3] < roi[1] + roi[3];
      results.push({ name: 'roi', ok: answer.status === 200 && answer.request.roi && status === 200 && near(saved, want) && inside,
        line: `roi ${JSON.stringify(answer.request.roi)} -> saved ${JSON.stringify(saved)}, answered ${JSON.stringify(want)}` });
    }

    if (atLeast('2.60.0')) { // delete: one click, then its prompt deleted
      const before = (await shapesSaved()).length;
      await startInteractor({ startWithBox: false });
      call = waitCall();
      await ui.clickPoint(job, 450, 350, SIZE); // inside the region, which may still be set (prompts outside it are ignored)
      log(`click call: ${(await call).status()}`);
      await job.waitForTimeout(1500);
      call = waitCall();
      await ui.deletePrompt(job, 0);
      const last = await call;
      await job.waitForTimeout(2500);
      const toasts = await errors();
      const emptyCall = calls[calls.length - 1];
      await ui.finish(job);
      await job.waitForTimeout(2000);
      await job.keyboard.press('Escape');
      const after = (await shapesSaved()).length;
      results.push({ name: 'delete', ok: last.status() === 200 && emptyCall.request.pos_points.length === 0 && toasts === 0 && after === before,
        line: `delete -> ${last.status()} ${JSON.stringify(emptyCall.body)}, error notifications ${toasts}, shapes ${before} -> ${after}` });
    }
    for (const c of calls) log(`lambda ${c.status}: roi=${JSON.stringify(c.request.roi)} pos=${JSON.stringify(c.request.pos_points)} bbox=${JSON.stringify(c.request.obj_bbox)}`);
    rc = results.every((r) => r.ok) ? 0 : 1;
  } catch (e) {
    log(`ERROR ${e.message.split('\n')[0]}`);
    try { await job.screenshot({ path: '/tmp/interactor-ui-failure.png' }); } catch (e2) { /* no page */ }
  }
  console.log(`real CVAT ${release}: interactor placement ${rc === 0 ? 'passed' : 'FAILED'}: `
    + results.map((r) => `${r.ok ? '' : 'FAIL '}${r.line}`).join('; '));
  await browser.close();
  process.exit(rc);
})();
