"""The HTML report's page template and its inline assets: the style sheet, and the script that sorts and
filters the verdict table. Everything is inline, so the page fetches nothing."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style></head>
<body>
{body}
<script>{js}</script>
</body></html>
"""

CSS = """
:root { --fg: #1a1a1a; --muted: #5c5c5c; --line: #d9d9d9; --bg-alt: #f5f5f5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 0 20px 40px; max-width: 1400px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h1 .store { color: var(--muted); font-weight: 400; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; }
nav a { margin-right: 14px; }
a { color: #0b5cad; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 10px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
ul.warnings { background: #fff4e5; border-left: 3px solid #E69F00; padding: 6px 6px 6px 26px; }
.hint { color: var(--muted); margin: 4px 0 8px; }
.filters { display: flex; gap: 18px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
.filters select { font: inherit; padding: 2px 4px; }
#shown { color: var(--muted); }
.scroll { overflow-x: auto; border: 1px solid var(--line); max-height: 80vh; }
#verdict-table { border-collapse: collapse; font-size: 12.5px; white-space: nowrap; }
#verdict-table th, #verdict-table td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; }
#verdict-table td.n { text-align: right; font-variant-numeric: tabular-nums; }
#verdict-table td.c { text-align: center; }
#verdict-table thead th { position: sticky; top: 0; background: #ececec; z-index: 2; }
#verdict-table th button { all: unset; cursor: pointer; font-weight: 600; }
#verdict-table th[aria-sort=ascending] button::after { content: " ▲"; }
#verdict-table th[aria-sort=descending] button::after { content: " ▼"; }
#verdict-table th:first-child, #verdict-table td:first-child { position: sticky; left: 0; background: #fff;
                                                              z-index: 1; }
#verdict-table thead th:first-child { z-index: 3; background: #ececec; }
#verdict-table tbody tr:nth-child(even) td { background: var(--bg-alt); }
#verdict-table tbody tr:hover td { background: #e8f1fb; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; font-weight: 600; }
.v-distinguishes { background: #009E73; color: #fff; } .v-fails { background: #D55E00; color: #fff; }
.v-inverted { background: #CC79A7; color: #fff; } .v-unstable { background: #E69F00; color: #000; }
.v-insufficient { background: #d9d9d9; color: #000; } .v-undefined { background: #56B4E9; color: #000; }
dl.rule { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; font-size: 13px; }
dl.rule dt { font-weight: 600; } dl.rule dd { margin: 0; }
.row { display: flex; flex-wrap: wrap; gap: 12px; }
.wrap { display: flex; flex-wrap: wrap; gap: 4px 24px; }
.row figure { flex: 1 1 340px; max-width: 460px; } .row img { width: 100%; }
figure { margin: 8px 0; } figcaption { color: var(--muted); font-size: 12.5px; }
img { max-width: 100%; height: auto; }
.legend .key { margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 4px;
            vertical-align: -1px; }
section.measure { border-top: 1px solid var(--line); padding-top: 4px; }
.meta { color: var(--muted); margin: 0 0 4px; }
ul.notes { margin: 4px 0; color: #7a4a00; }
.measure-body { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
svg.plot { max-width: 100%; height: auto; }
.key-box { flex: 1 1 360px; max-width: 480px; } .key-box table { width: 100%; }
.wide-box { flex: 1 1 100%; }
table.numbers { border-collapse: collapse; font-size: 12px; }
table.numbers th, table.numbers td { padding: 1px 8px; border-bottom: 1px solid #eee; text-align: left;
                                     vertical-align: top; max-width: 420px; }
table.numbers tbody th { font-weight: 400; color: var(--muted); white-space: nowrap; }
details { margin: 4px 0 10px; } summary { cursor: pointer; color: var(--muted); }
:target { scroll-margin-top: 10px; }
section.measure:target h3 { background: #fff4c2; }
"""

JS = r"""
(function () {
  var table = document.getElementById('verdict-table');
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function key(row, index, numeric) {
    var v = row.cells[index].getAttribute('data-v');
    if (v === null || v === '') { return null; }
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(th) {
    var index = headers.indexOf(th);
    var numeric = th.getAttribute('data-type') === 'num';
    var order = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    headers.forEach(function (h) { h.setAttribute('aria-sort', 'none'); });
    th.setAttribute('aria-sort', order);
    var sign = order === 'ascending' ? 1 : -1;
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.forEach(function (row, i) { row._i = i; });
    rows.sort(function (a, b) {
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) { return x === y ? a._i - b._i : (x === null ? 1 : -1); }  // blanks last
      if (x < y) { return -sign; }
      if (x > y) { return sign; }
      return a._i - b._i;
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
  }
  headers.forEach(function (th) { th.addEventListener('click', function () { sortBy(th); }); });
  var selects = ['f-verdict', 'f-kind', 'f-family'].map(function (id) { return document.getElementById(id); });
  var shown = document.getElementById('shown');
  function filter() {
    var verdict = selects[0] ? selects[0].value : '', kind = selects[1] ? selects[1].value : '';
    var family = selects[2] ? selects[2].value : '';
    var count = 0, total = tbody.rows.length;
    Array.prototype.forEach.call(tbody.rows, function (row) {
      var own = row.getAttribute('data-verdict');
      if (family) { own = JSON.parse(row.getAttribute('data-families') || '{}')[family] || ''; }
      var show = (!verdict || own === verdict) && (!kind || row.getAttribute('data-kind') === kind)
        && (!family || own !== '');
      row.style.display = show ? '' : 'none';
      count += show ? 1 : 0;
    });
    shown.textContent = count + ' of ' + total + ' measures shown';
  }
  selects.forEach(function (s) { if (s) { s.addEventListener('change', filter); } });
  filter();
})();
"""
