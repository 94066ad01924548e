/* The cachebus demo page: charts (uPlot) of the demo's samples, one series per scenario, with
   markers for chaos steps and for the gaps / clears the caches saw. Live: fed by /events
   (server-sent events). Report: the whole run is in window.DEMO_REPORT. No framework. */
(function () {
  'use strict';
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
  else main();
  function main() {
  var COLORS = { 'bus off': '#d62728', 'bus on': '#2ca02c', 'write-behind': '#1f77b4', 'external writes': '#9467bd', chaos: '#ff7f0e' };
  var PALETTE = ['#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
  var CHAOS = '#c0262d', GAP = '#b7791f';

  /** Charts: each plots one or two measures (the second dashed) of every scenario. */
  var CHARTS = [
    { id: 'stale', title: 'Stale reads / s', sub: 'solid: all stale reads; dashed: older than the bound', m: ['stale', 'beyond'], labels: true },
    { id: 'age', title: 'Staleness age p99 (ms)', sub: 'grey line: the bound', m: ['ageP99'], bound: true },
    { id: 'lag', title: 'Invalidation lag (ms)', sub: 'solid: p50; dashed: p99 (publish → applied)', m: ['lagP50', 'lagP99'], labels: true },
    { id: 'hit', title: 'Hit ratio', sub: 'reads answered from a local cache', m: ['hitRatio'], range: [0, 1] },
    { id: 'writes', title: 'Writes / s', sub: '', m: ['writes'] },
    { id: 'reads', title: 'Reads / s', sub: '', m: ['reads'] },
  ];

  var report = window.DEMO_REPORT;
  var st = null;          // the LiveState
  var clockSkew = 0;      // server now − our now
  var charts = [];        // { def, u }
  var currentBands = [];
  var api = { state: null, charts: charts, updates: 0, report: !!report };
  window.__demo = api;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  function color(i) { var n = st.scenarios[i]; return COLORS[n] || PALETTE[i % PALETTE.length]; }
  function fmt(x) { return x == null ? '-' : x >= 100 ? String(Math.round(x)) : String(x); }
  function num(x) { return Number(x).toLocaleString('en-US'); }

  var GAP_S = 2;  // seconds of blank between two scenarios' bands

  /**
   * The x axis shows the scenarios side by side, each in its band, leaving out the time spent
   * starting and stopping workers between them: band i spans [from, to] of its own time (its
   * samples and markers) and starts where band i − 1 ended plus GAP_S.
   */
  function bands() {
    var out = [];
    function take(s, t0, t1) {
      var b = out[s] || (out[s] = { from: t0, to: t1 });
      if (t0 < b.from) b.from = t0;
      if (t1 > b.to) b.to = t1;
    }
    st.samples.forEach(function (p) { take(p.s, p.t - 1, p.t); });
    st.markers.forEach(function (m) { if (m.s >= 0) take(m.s, m.t, m.t); });
    var at = 0;
    for (var i = 0; i < out.length; i++) {
      if (!out[i]) continue;
      out[i].x0 = at;
      out[i].x1 = at + (out[i].to - out[i].from);
      at = out[i].x1 + GAP_S;
    }
    return out;
  }
  function xOf(bs, s, t) { var b = bs[s]; return b ? b.x0 + (t - b.from) : null; }

  /** uPlot's data for one chart: [x, then per scenario per measure its values, null outside its band]. */
  function dataFor(def, bs) {
    var s = st.samples, xs = new Array(s.length), cols = [];
    for (var k = 0; k < s.length; k++) xs[k] = xOf(bs, s[k].s, s[k].t);
    for (var i = 0; i < st.scenarios.length; i++) {
      for (var j = 0; j < def.m.length; j++) {
        var col = new Array(s.length);
        for (var k2 = 0; k2 < s.length; k2++) col[k2] = s[k2].s === i ? s[k2][def.m[j]] : null;
        cols.push(col);
      }
    }
    return [xs].concat(cols);
  }

  function drawOverlay(u, def) {
    var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, dpr = window.devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    var bs = currentBands;
    ctx.font = (10 * dpr) + 'px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'alphabetic';
    bs.forEach(function (b, i) {
      if (!b) return;
      var x0 = u.valToPos(b.x0, 'x', true), x1 = u.valToPos(b.x1, 'x', true);
      ctx.fillStyle = color(i) + '14';
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), h);
      ctx.fillStyle = color(i);
      ctx.fillText(st.scenarios[i], x0 + 3 * dpr, top + h - 4 * dpr);
    });
    if (def.bound) {
      var y = u.valToPos(st.boundMs, 'y', true);
      if (y >= top && y <= top + h) {
        ctx.strokeStyle = '#98a2b3'; ctx.lineWidth = dpr; ctx.setLineDash([4 * dpr, 4 * dpr]);
        ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
      }
    }
    var labels = [];
    st.markers.forEach(function (m) {
      var mx = xOf(bs, m.s, m.t);
      if (mx == null) return;
      var x = u.valToPos(mx, 'x', true);
      var chaos = m.kind === 'chaos';
      ctx.strokeStyle = chaos ? CHAOS : GAP;
      ctx.lineWidth = (chaos ? 2 : 1) * dpr;
      ctx.setLineDash(chaos ? [] : [3 * dpr, 3 * dpr]);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
      if (chaos && def.labels) labels.push({ x: x, text: m.label });
    });
    // Labels over every line, stacked, on a light background; left of the line near the right edge.
    labels.forEach(function (l, k) {
      var w = ctx.measureText(l.text).width, right = l.x + 3 * dpr + w > u.bbox.left + u.bbox.width;
      var tx = right ? l.x - 3 * dpr - w : l.x + 3 * dpr, ty = top + (11 + 12 * (k % 5)) * dpr;
      ctx.fillStyle = 'rgba(255,255,255,0.85)';
      ctx.fillRect(tx - 2 * dpr, ty - 9 * dpr, w + 4 * dpr, 12 * dpr);
      ctx.fillStyle = CHAOS;
      ctx.fillText(l.text, tx, ty);
    });
    ctx.restore();
  }

  function xRange() {
    var last = currentBands[currentBands.length - 1];
    return [0, Math.max(1, last ? last.x1 : 1)];
  }

  /** Ticks at whole seconds of each band's own time, spaced to about one per 70 px. */
  function tickSplits(u) {
    var r = xRange(), perPx = (r[1] - r[0]) / Math.max(100, u.bbox.width / (window.devicePixelRatio || 1));
    var want = perPx * 45, steps = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600], step = steps[steps.length - 1];
    for (var k = 0; k < steps.length; k++) if (steps[k] >= want) { step = steps[k]; break; }
    var out = [];
    currentBands.forEach(function (b) {
      if (!b) return;
      for (var x = 0; x <= b.x1 - b.x0 + 1e-9; x += step) out.push(b.x0 + x);
    });
    return out;
  }

  /** A tick at display x: the seconds of its scenario's load (blank between bands). */
  function tickLabels(u, ticks) {
    return ticks.map(function (x) {
      for (var i = 0; i < currentBands.length; i++) {
        var b = currentBands[i];
        if (b && x >= b.x0 - 1e-9 && x <= b.x1 + 1e-9) return String(Math.round((x - b.x0) * 10) / 10);
      }
      return '';
    });
  }

  function seriesFor(def) {
    var out = [{ label: 't (s)' }];
    st.scenarios.forEach(function (name, i) {
      def.m.forEach(function (m, j) {
        out.push({ label: name + ' ' + m, stroke: color(i), width: j === 0 ? 2 : 1.5, dash: j === 0 ? undefined : [6, 4], spanGaps: false, points: { show: false } });
      });
    });
    return out;
  }

  function chartSize(box) {
    return { width: Math.max(300, box.clientWidth - 16), height: 200 };
  }

  function buildCharts() {
    var host = $('charts');
    host.textContent = '';
    charts.length = 0;
    CHARTS.forEach(function (def) {
      var box = el('div', 'chart');
      box.id = 'chart-' + def.id;
      var h = el('h3', null, def.title + ' ');
      if (def.sub) h.appendChild(el('span', 'sub', '— ' + def.sub));
      box.appendChild(h);
      host.appendChild(box);
      var size = chartSize(box);
      var opts = {
        width: size.width, height: size.height,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false, range: xRange }, y: def.range ? { range: def.range } : { range: function (u, min, max) { return [0, Math.max(1, max == null ? 1 : max * 1.1)]; } } },
        axes: [{ label: 'seconds of load in each scenario (scenarios side by side)', size: 38, labelSize: 16, splits: tickSplits, values: tickLabels }, { size: 50 }],
        series: seriesFor(def),
        hooks: { draw: [function (u) { drawOverlay(u, def); }] },
      };
      var u = new uPlot(opts, dataFor(def, currentBands), box);
      charts.push({ def: def, u: u });
    });
  }

  function legend() {
    var lg = $('legend');
    lg.textContent = '';
    st.scenarios.forEach(function (name, i) {
      var item = el('span', st.status.s === i && st.status.phase !== 'done' ? 'running' : null);
      var sw = el('span', 'sw');
      sw.style.borderTopColor = color(i);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(name));
      lg.appendChild(item);
    });
    [['chaos', CHAOS, 'chaos step'], ['gap', GAP, 'gap / clear seen by the caches']].forEach(function (k) {
      var item = el('span'), mk = el('span', 'mk ' + k[0]);
      mk.style.borderLeftColor = k[1];
      item.appendChild(mk);
      item.appendChild(document.createTextNode(k[2]));
      lg.appendChild(item);
    });
  }

  function status() {
    var s = st.status, box = $('status'), name = st.scenarios[s.s], of = ' (' + (s.s + 1) + '/' + st.scenarios.length + ')';
    box.textContent = '';
    if (s.phase === 'done') box.textContent = report ? 'Finished run' : 'Finished: the table below is final';
    else if (s.phase === 'starting') box.textContent = 'Starting…';
    else if (s.phase === 'stopped') box.textContent = 'The demo stopped before the end (the terminal says why); showing what arrived.';
    else if (s.phase === 'setup') box.textContent = 'Starting workers for ' + name + of;
    else if (s.phase === 'check') box.textContent = 'Checking ' + name + of;
    else {
      box.appendChild(document.createTextNode('Running: ' + name + of + ' '));
      var left = Math.max(0, (s.loadEnd - (Date.now() + clockSkew)) / 1000);
      box.appendChild(el('span', 'left', left.toFixed(1) + ' s left'));
    }
    box.dataset.phase = s.phase;
    box.dataset.scenario = name || '';
  }

  function markerList() {
    var ol = $('markers');
    ol.textContent = '';
    st.markers.forEach(function (m) {
      var b = currentBands[m.s], at = b ? ' +' + (m.t - b.from).toFixed(1) + ' s' : '';
      var li = el('li', m.kind, (st.scenarios[m.s] || '') + at + ': ' + m.label);
      li.dataset.kind = m.kind;
      ol.appendChild(li);
    });
    if (st.markers.length === 0) ol.appendChild(el('li', null, 'none yet'));
  }

  function table() {
    var t = $('results'), b = st.boundMs;
    t.textContent = '';
    if (st.verdict) $('verdict').textContent = st.verdict;
    if (st.results.length === 0) return;
    var head = ['scenario', 'reads', 'stale', 'stale >' + b + ' ms', 'staleness p50/p99 ms', 'lag p50/p99 ms', 'hit ratio', 'writes/s', 'notes'];
    var tr = el('tr');
    head.forEach(function (h, i) { tr.appendChild(el('th', i === head.length - 1 ? 'notes' : null, h)); });
    t.appendChild(tr);
    st.results.forEach(function (r) {
      var row = el('tr', r.ok || r.interrupted || r.skipped ? null : 'fail');
      var pair = function (a, c) { return a == null && c == null ? '-' : fmt(a) + ' / ' + fmt(c); };
      var gaps = Object.keys(r.gaps || {}).map(function (c) { return c + ' ' + r.gaps[c]; });
      var notes = (r.ok || r.interrupted ? [] : ['FAIL']).concat(r.notes, gaps.length ? ['gaps: ' + gaps.join(', ')] : []).join('; ');
      var cells = r.skipped != null ? [r.name, '-', '-', '-', '-', '-', '-', '-', r.notes.join('; ')]
        : [r.name, num(r.reads), num(r.staleReads), num(r.staleBeyondBound), pair(r.stalenessP50Ms, r.stalenessP99Ms),
          pair(r.lagP50Ms, r.lagP99Ms), (r.hitRatio * 100).toFixed(1) + ' %', num(r.writesPerSec), notes];
      cells.forEach(function (c, i) {
        var td = el('td', i === cells.length - 1 ? 'notes' : null);
        if (i === 0) {
          var dot = el('span', 'dot');
          dot.style.background = COLORS[r.name] || '#999';
          td.appendChild(dot);
        }
        td.appendChild(document.createTextNode(c));
        row.appendChild(td);
      });
      t.appendChild(row);
    });
  }

  function render() {
    currentBands = bands();
    charts.forEach(function (c) { c.u.setData(dataFor(c.def, currentBands)); });
    legend(); status(); markerList(); table();
    api.state = st;
  }

  function start(state) {
    st = state;
    if (state.now) clockSkew = state.now - Date.now();
    $('mode').textContent = report ? '— report of a run' : '— live';
    $('config').textContent = st.caches + '; ' + (st.durationMs / 1000).toFixed(1) + ' s of load per scenario; staleness bound ' + st.boundMs + ' ms; one point per second';
    currentBands = bands();
    buildCharts();
    render();
  }

  window.addEventListener('resize', function () {
    charts.forEach(function (c) { c.u.setSize(chartSize(c.u.root.parentNode)); });
  });

  if (report) {
    start(report);
    api.ready = true;
    return;
  }
  var es = new EventSource('/events');
  es.addEventListener('state', function (e) { start(JSON.parse(e.data)); api.ready = true; });
  es.addEventListener('update', function (e) {
    var u = JSON.parse(e.data);
    if (!st) return;
    clockSkew = u.now - Date.now();
    Array.prototype.push.apply(st.samples, u.samples);
    Array.prototype.push.apply(st.markers, u.markers);
    st.status = u.status;
    if (u.results) { st.results = u.results; st.verdict = u.verdict; }
    api.updates++;
    render();
    if (st.status.phase === 'done' || st.status.phase === 'stopped') es.close(); // the demo is over: keep what is shown
  });
  es.onerror = function () {
    if (st && (st.status.phase === 'done' || st.status.phase === 'stopped')) return;
    $('status').textContent = 'Disconnected from the demo (it ended or was stopped); showing what arrived.';
  };
  setInterval(function () { if (st && st.status.phase === 'load') status(); }, 250);
  }
})();
