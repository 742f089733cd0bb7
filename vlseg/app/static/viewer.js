// vlseg slice viewer: three linked planes drawn from sprite sheets made in Python (viewer.py).
// Runs as gr.HTML's js_on_load: `element` is the component, `props.value` the JSON payload,
// `watch('value', fn)` re-runs fn when Python sends a new payload. No slicing happens here: tile i
// of a plane's sheet IS slice i in display orientation; the payload says which voxel axis runs
// along rows/columns (and whether flipped), so clicks map back to voxels for linked crosshairs.
const st = {key: null, focus: null, vox: [0, 0, 0], opacity: null, off: {}, active: 'axial',
            imgs: {}, data: null};

function parse() {
  try { return props.value ? JSON.parse(props.value) : null; } catch (e) { return null; }
}

function loadImage(url) {
  if (!url) return Promise.resolve(null);
  if (!st.imgs[url]) {
    st.imgs[url] = new Promise((resolve) => {
      const im = new Image();
      im.onload = () => resolve(im);
      im.onerror = () => resolve(null);
      im.src = url;
    });
  }
  return st.imgs[url];
}

function root() {
  let r = element.querySelector('.vv');
  if (!r) {
    r = document.createElement('div');
    r.className = 'vv';
    element.appendChild(r);
  }
  return r;
}

function build(d) {
  const r = root();
  r.innerHTML = '';
  if (!d) {
    r.innerHTML = '<p class="vv-empty">Load a case to see its slices here.</p>';
    return;
  }
  const grid = document.createElement('div');
  // Two time points (d.panels): each plane once per panel, side by side, one geometry.
  const panels = d.panels || [null];
  grid.className = d.panels ? 'vv-grid vv-pair' : 'vv-grid';
  for (const p of d.planes) {
    panels.forEach((panel, k) => {
      const cell = document.createElement('div');
      cell.className = 'vv-cell';
      cell.dataset.plane = p.name;
      const c = document.createElement('canvas');
      c.tabIndex = 0;
      c.dataset.plane = p.name;
      if (panel) c.dataset.panel = String(k);
      c.setAttribute('aria-label', (panel ? panel.title + ', ' : '') + p.name +
        ' slice: mouse wheel or arrow keys scroll, click moves the crosshair');
      const cap = document.createElement('div');
      cap.className = 'vv-cap';
      cell.appendChild(c);
      cell.appendChild(cap);
      grid.appendChild(cell);
    });
  }
  const side = document.createElement('div');
  side.className = 'vv-cell vv-side';
  const entry = (c, text) => `<label class="vv-leg" title="${c.name}"><input type="checkbox" data-code="${c.code}" ${st.off[c.code] ? '' : 'checked'}>` +
        `<span class="vv-sw" style="background: rgb(${c.color.join(',')})"></span>${text}${c.found ? '' : ' <i>(none found)</i>'}</label>`;
  let legend = d.concepts.length
    ? d.concepts.map((c) => entry(c, `<b>${c.code}</b>&nbsp;${c.name}${c.volume ? ' <span class="vv-vol">' + c.volume + '</span>' : ''}`)).join('')
    : '<p class="vv-hint">Overlays appear here once you ask for a region.</p>';
  if (d.panels) {
    legend = `<div class="vv-seqname">${d.panels[0].title}</div>` + legend +
      `<div class="vv-seqname">${d.panels[1].title}</div>` + (d.change || []).map((c) => entry(c, c.name)).join('');
  }
  side.innerHTML = `<div class="vv-seqname">${d.seq_title}</div><div class="vv-legend">${legend}</div>` +
    `<label class="vv-op">Overlay opacity <input type="range" min="0" max="100" step="5" value="${Math.round(100 * st.opacity)}" class="vv-opacity"></label>` +
    `<p class="vv-hint">Wheel or ↑/↓ scroll a plane · click to move the crosshair · ${d.convention} view</p>`;
  grid.appendChild(side);
  r.appendChild(grid);
}

function plane(name) { return st.data.planes.find((p) => p.name === name); }

function tileOf(p, i) {
  const [h, w] = p.tile;
  return [(i % p.cols) * w, Math.floor(i / p.cols) * h, w, h];
}

function toPix(p, v) {  // voxel -> (row, col) in the tile
  const [ra, rf] = p.row, [ca, cf] = p.col;
  const [h, w] = p.tile;
  return [rf ? h - 1 - v[ra] : v[ra], cf ? w - 1 - v[ca] : v[ca]];
}

function fromPix(p, row, col) {  // (row, col) in the tile -> sets two voxel coordinates
  const [ra, rf] = p.row, [ca, cf] = p.col;
  const [h, w] = p.tile;
  row = Math.max(0, Math.min(h - 1, row)); col = Math.max(0, Math.min(w - 1, col));
  st.vox[ra] = rf ? h - 1 - row : row;
  st.vox[ca] = cf ? w - 1 - col : col;
}

function layout(canvas, p) {  // fit the tile with its physical aspect, centred
  const dpr = window.devicePixelRatio || 1;
  const cw = canvas.clientWidth || 200;
  const [h, w] = p.tile;
  const ph = h * p.aspect;
  // Two rows of planes fit one screen: each at most a third of the window high.
  const ch = Math.round(Math.min(cw * Math.min(1.25, Math.max(0.6, ph / w)), Math.max(180, window.innerHeight * 0.34)));
  if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
    canvas.width = Math.round(cw * dpr); canvas.height = Math.round(ch * dpr);
    canvas.style.height = ch + 'px';
  }
  const s = Math.min(canvas.width / w, canvas.height / ph);
  const dw = w * s, dh = ph * s;
  return {s, dx: (canvas.width - dw) / 2, dy: (canvas.height - dh) / 2, dw, dh, dpr};
}

function overlayLayer(p, i, maskImg, layers) {  // colour the bit-field tile in draw order
  const [sx, sy, w, h] = tileOf(p, i);
  const tc = document.createElement('canvas');
  tc.width = w; tc.height = h;
  const tctx = tc.getContext('2d', {willReadFrequently: true});
  tctx.drawImage(maskImg, sx, sy, w, h, 0, 0, w, h);
  const px = tctx.getImageData(0, 0, w, h);
  const a = st.opacity;
  const out = px.data;
  for (let k = 0; k < out.length; k += 4) {
    const bits = out[k];
    let r = 0, g = 0, b = 0, al = 0;  // premultiplied "over" of each layer, like picture.blend
    for (const c of layers) {
      if (bits & c.bit) {
        r = a * c.color[0] + (1 - a) * r; g = a * c.color[1] + (1 - a) * g;
        b = a * c.color[2] + (1 - a) * b; al = a + (1 - a) * al;
      }
    }
    if (al > 0) { out[k] = r / al; out[k + 1] = g / al; out[k + 2] = b / al; out[k + 3] = 255 * al; }
    else { out[k + 3] = 0; }
  }
  tctx.putImageData(px, 0, 0);
  return tc;
}

function drawPlane(name) {
  if (!st.data) return;
  for (const canvas of element.querySelectorAll(`canvas[data-plane="${name}"]`)) drawCanvas(name, canvas);
}

async function drawCanvas(name, canvas) {
  const d = st.data;
  const p = plane(name);
  const i = Math.max(0, Math.min(p.n - 1, st.vox[p.axis]));
  // A panel (two time points) brings its own sheets and its own layers: the baseline's concepts
  // or the change classes.
  const panel = d.panels && canvas.dataset.panel !== undefined ? d.panels[Number(canvas.dataset.panel)] : null;
  const bgUrl = panel ? panel.bg[name] : p.bg, maskUrl = panel ? panel.mask[name] : p.mask;
  const layers = panel && panel.layers === 'change'
    ? (d.change || []).filter((c) => !st.off[c.code])
    : d.draw_order.map((code) => d.concepts.find((c) => c.code === code)).filter((c) => c && !st.off[c.code]);
  const [bgImg, maskImg] = await Promise.all([loadImage(bgUrl), loadImage(maskUrl)]);
  if (st.data !== d) return;  // a newer payload arrived meanwhile
  const ctx = canvas.getContext('2d');
  const L = layout(canvas, p);
  ctx.fillStyle = '#000'; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const [sx, sy, w, h] = tileOf(p, i);
  if (bgImg) { ctx.imageSmoothingEnabled = true; ctx.drawImage(bgImg, sx, sy, w, h, L.dx, L.dy, L.dw, L.dh); }
  if (maskImg && st.opacity > 0) {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(overlayLayer(p, i, maskImg, layers), 0, 0, w, h, L.dx, L.dy, L.dw, L.dh);
  }
  // Crosshair through the linked point.
  const [row, col] = toPix(p, st.vox);
  const x = L.dx + (col + 0.5) * L.dw / w, y = L.dy + (row + 0.5) * L.dh / h;
  ctx.strokeStyle = 'rgba(80, 255, 120, 0.55)'; ctx.lineWidth = Math.max(1, L.dpr);
  const gap = 6 * L.dpr;
  ctx.beginPath();
  ctx.moveTo(L.dx, y); ctx.lineTo(x - gap, y); ctx.moveTo(x + gap, y); ctx.lineTo(L.dx + L.dw, y);
  ctx.moveTo(x, L.dy); ctx.lineTo(x, y - gap); ctx.moveTo(x, y + gap); ctx.lineTo(x, L.dy + L.dh);
  ctx.stroke();
  // Side marks (radiological: R on the left of axial and coronal views).
  ctx.fillStyle = '#fff'; ctx.font = `${Math.round(13 * L.dpr)}px sans-serif`; ctx.textBaseline = 'middle';
  ctx.textAlign = 'left'; ctx.fillText(p.marks[0], 4 * L.dpr, canvas.height / 2);
  ctx.textAlign = 'right'; ctx.fillText(p.marks[1], canvas.width - 4 * L.dpr, canvas.height / 2);
  const cap = canvas.parentElement.querySelector('.vv-cap');
  if (cap) {
    const title = name[0].toUpperCase() + name.slice(1);
    const full = (d.full_shape || d.shape)[p.axis];
    cap.textContent = (panel ? panel.title.split(' · ')[0] + ' · ' : '') + `${title} · slice ${i + 1 + d.offset[p.axis]} of ${full}`;
    cap.classList.toggle('vv-active', st.active === name);
  }
}

function drawAll() { if (st.data) for (const p of st.data.planes) drawPlane(p.name); }

function scroll(name, step) {
  const p = plane(name);
  st.vox[p.axis] = Math.max(0, Math.min(p.n - 1, st.vox[p.axis] + step));
  st.active = name;
  drawAll();
}

function onPayload() {
  const d = parse();
  const defaults = () => Object.fromEntries((d.off_by_default || []).map((c) => [c, true]));
  if (d && st.key !== d.key) {  // a new case: reset the crosshair and the toggles
    st.off = defaults();
    st.vox = d.center.slice();
    st.focus = d.focus;
  } else if (d && st.focus !== d.focus) {  // a new answer: jump to its target, its own toggles
    st.off = defaults();
    st.vox = d.center.slice();
    st.focus = d.focus;
  }
  if (d && st.opacity === null) st.opacity = d.opacity;
  st.key = d ? d.key : null;
  st.data = d;
  build(d);
  drawAll();
}

// Event delegation on the component root: survives template re-renders.
element.addEventListener('wheel', (ev) => {
  const c = ev.target.closest && ev.target.closest('canvas[data-plane]');
  if (!c || !st.data) return;
  ev.preventDefault();
  scroll(c.dataset.plane, ev.deltaY > 0 ? -1 : 1);
}, {passive: false});
element.addEventListener('keydown', (ev) => {
  const c = ev.target.closest && ev.target.closest('canvas[data-plane]');
  if (!c || !st.data) return;
  const steps = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10};
  if (!(ev.key in steps)) return;
  ev.preventDefault();
  scroll(c.dataset.plane, steps[ev.key]);
});
function pointAt(ev) {
  const c = ev.target.closest && ev.target.closest('canvas[data-plane]');
  if (!c || !st.data) return;
  const p = plane(c.dataset.plane);
  const L = layout(c, p);
  const rect = c.getBoundingClientRect();
  const x = (ev.clientX - rect.left) * L.dpr, y = (ev.clientY - rect.top) * L.dpr;
  fromPix(p, Math.floor((y - L.dy) / L.dh * p.tile[0]), Math.floor((x - L.dx) / L.dw * p.tile[1]));
  st.active = p.name;
  c.focus({preventScroll: true});
  drawAll();
}
let dragging = false;
element.addEventListener('pointerdown', (ev) => { if (ev.target.tagName === 'CANVAS') { dragging = true; pointAt(ev); } });
element.addEventListener('pointermove', (ev) => { if (dragging && (ev.buttons & 1)) pointAt(ev); });
window.addEventListener('pointerup', () => { dragging = false; });
element.addEventListener('focusin', (ev) => {
  if (ev.target.dataset && ev.target.dataset.plane && ev.target.tagName === 'CANVAS') { st.active = ev.target.dataset.plane; drawAll(); }
});
element.addEventListener('input', (ev) => {
  if (ev.target.classList.contains('vv-opacity')) { st.opacity = ev.target.value / 100; drawAll(); }
});
element.addEventListener('change', (ev) => {
  const code = ev.target.dataset && ev.target.dataset.code;
  if (code) { st.off[code] = !ev.target.checked; drawAll(); }
});
new ResizeObserver(() => drawAll()).observe(element);
element.vlsegViewer = st;  // for tests: the linked voxel, opacity, toggles
watch('value', onPayload);
onPayload();
