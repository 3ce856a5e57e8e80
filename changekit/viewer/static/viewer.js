// changekit view: the input image(s), the output layers and the polygons of one run on a MapLibre map.
// A change run shows both dates, the change probability and map; a segmentation run the image, the class map
// (the classes' palette, with a legend) and the confidence of the chosen class; a timeline every date under a
// time slider, the date each place first changed (coloured by date, with a legend), the last change and the count.
(async function () {
  const scene = await (await fetch("/scene.json")).json();
  const polygons = await (await fetch("/polygons.geojson")).json();
  if (scene.task === "timeline") showTimeline(scene, polygons);
  else showScene(scene, polygons);
})();

const hex = (c) => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");

function tiles(scene, layer) {
  return { type: "raster", tiles: [location.origin + "/tiles/" + layer + "/{z}/{x}/{y}.png"], tileSize: 256,
           bounds: scene.bounds, maxzoom: 22 };
}

// the map of a run: its raster layers ([id, opacity, visible]) and the polygons, outlined in lineColor
function makeMap(scene, polygons, rasters, lineColor, fillColor, lineWidth) {
  const [w, s, e, n] = scene.bounds;
  const sources = { polygons: { type: "geojson", data: polygons } };
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#202020" } }];
  for (const [id, opacity, visible] of rasters) {
    sources[id] = tiles(scene, id);
    layers.push({ id, type: "raster", source: id, paint: { "raster-opacity": opacity },
                  layout: { visibility: visible ? "visible" : "none" } });
  }
  layers.push({ id: "polygons-fill", type: "fill", source: "polygons", paint: { "fill-color": fillColor, "fill-opacity": 0.05 } });
  layers.push({ id: "polygons-outline", type: "line", source: "polygons", paint: { "line-color": lineColor, "line-width": lineWidth } });
  const map = new maplibregl.Map({
    container: "map", style: { version: 8, sources, layers }, bounds: [[w, s], [e, n]],
    fitBoundsOptions: { padding: 20 }, maxZoom: 22, attributionControl: false, preserveDrawingBuffer: true,
  });
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
  map.once("idle", () => { document.body.dataset.ready = "1"; });
  return map;
}

// a layer switch in the side panel (the polygons' switch also hides their fill)
function toggle(map, id, label, checked, swatch) {
  const row = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox"; box.checked = checked; box.dataset.layer = id;
  box.onchange = () => {
    const vis = box.checked ? "visible" : "none";
    map.setLayoutProperty(id, "visibility", vis);
    if (id === "polygons-outline") map.setLayoutProperty("polygons-fill", "visibility", vis);
  };
  row.appendChild(box);
  if (swatch) {
    const sw = document.createElement("span");
    sw.className = "legend"; sw.style.background = swatch;
    row.appendChild(sw);
  }
  row.appendChild(document.createTextNode(" " + label));
  document.getElementById("layers").appendChild(row);
}

function legendRow(colour, text) {
  const row = document.createElement("div");
  const sw = document.createElement("span");
  sw.className = "legend"; sw.style.background = colour; sw.style.border = "1px solid #999";
  row.appendChild(sw);
  row.appendChild(document.createTextNode(text));
  document.getElementById("legend").appendChild(row);
}

// m² where the run has a CRS (geodesic on geographic rasters), else the raster's own units
const area = (p) => (p.area_m2 !== null && p.area_m2 !== undefined)
  ? Math.round(Number(p.area_m2)).toLocaleString("en") + " m\u00b2" : Number(p.area).toFixed(1) + " (CRS units\u00b2)";

// popups on click, and the list of polygons by area (sorted by the server); a click on a row zooms to it
function polygonList(map, polygons, popup, row) {
  map.on("click", "polygons-fill", (ev) => {
    new maplibregl.Popup().setLngLat(ev.lngLat).setHTML(popup(ev.features[0].properties)).addTo(map);
  });
  const list = document.getElementById("list");
  document.getElementById("count").textContent = "(" + polygons.features.length + ")";
  for (const f of polygons.features.slice(0, 500)) {
    const li = document.createElement("li");
    li.textContent = row(f.properties);
    li.onclick = () => {
      const xs = [], ys = [];
      for (const ring of f.geometry.coordinates) for (const [x, y] of ring) { xs.push(x); ys.push(y); }
      map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], { padding: 80, maxZoom: 21 });
    };
    list.appendChild(li);
  }
}

function showScene(scene, polygons) {
  const seg = scene.task === "segmentation";
  // [layer, label, opacity, visible, legend swatch]
  const rasters = seg
    ? [["image", "image", 1.0, true],
       ["confidence", "confidence of the class", 0.6, false, "linear-gradient(90deg,#ffe600,#ff0000)"],
       ["classes", "class map", 0.55, true]]
    : [["t1", "date 1", 1.0, true], ["t2", "date 2", 0.5, true],
       ["probability", "change probability", 0.6, true, "linear-gradient(90deg,#ffe600,#ff0000)"],
       ["change", "change map", 0.8, true, "#e61919"]];
  const lineColor = seg
    ? ["match", ["get", "class"], ...scene.palette.flatMap((c, i) => [i, hex(c)]), "#000000"]
    : "#ff3030";
  const map = makeMap(scene, polygons, rasters.map(([id, , op, vis]) => [id, op, vis]), lineColor,
                      seg ? lineColor : "#ff3030", seg ? 1 : 1.5);
  document.getElementById("info").textContent = (scene.crs || "no CRS") + " \u2022 window " + scene.window +
    (seg ? " \u2022 " + scene.class_names.length + " classes" : " \u2022 threshold " + scene.threshold);
  for (const [id, label, , visible, swatch] of rasters) {
    toggle(map, id, label, visible, swatch);
    if (id === "t2") {  // the date-2 opacity slider of a change run
      const row = document.createElement("label");
      row.textContent = "date 2 opacity ";
      const slider = document.createElement("input");
      slider.type = "range"; slider.min = 0; slider.max = 100; slider.value = 50;
      slider.oninput = () => map.setPaintProperty("t2", "raster-opacity", Number(slider.value) / 100);
      row.appendChild(slider);
      document.getElementById("layers").appendChild(row);
    }
  }
  toggle(map, "polygons-outline", seg ? "class polygons" : "change polygons", true);
  if (seg) {  // the legend: each class's colour and name
    scene.class_names.forEach((name, i) => legendRow(hex(scene.palette[i]), i + " " + name));
    document.getElementById("list-title").textContent = "Regions";
  }
  const describe = (p) => (seg ? p.class_name + " #" : "change #") + p.rank;
  polygonList(map, polygons, (p) => describe(p) + "<br>area " + area(p) + "<br>" + p.pixels + " px",
              (p) => "#" + p.rank + (seg ? "  " + p.class_name : "") + "  " + area(p));
}

function showTimeline(scene, polygons) {
  const N = scene.labels.length;
  const dateId = (k) => "date" + String(k).padStart(2, "0");
  const outputs = [["first_change", "first change (by date)", true], ["last_change", "last change (by date)", false],
                   ["n_changes", "number of changes", false]];
  const rasters = [];
  for (let k = 1; k <= N; k++) rasters.push([dateId(k), 1.0, k === N]);
  for (const [id, , visible] of outputs) rasters.push([id, 0.8, visible]);
  const byDate = ["match", ["get", "first"], ...scene.colours.flatMap((c, i) => [i + 1, hex(c)]), "#ff3030"];
  const map = makeMap(scene, polygons, rasters, byDate, byDate, 1.5);
  document.getElementById("info").textContent = N + " dates \u2022 " + scene.pair_mode + " pairs" +
    (scene.min_persistence > 1 ? " \u2022 persisting " + scene.min_persistence + " dates" : "") +
    " \u2022 " + (scene.crs || "no CRS");
  // the time slider: one date shown at a time
  const row = document.createElement("label");
  const slider = document.createElement("input");
  slider.type = "range"; slider.min = 1; slider.max = N; slider.value = N; slider.id = "time";
  const shown = document.createElement("span");
  shown.textContent = " " + scene.labels[N - 1];
  slider.oninput = () => {
    for (let k = 1; k <= N; k++) map.setLayoutProperty(dateId(k), "visibility", k === Number(slider.value) ? "visible" : "none");
    shown.textContent = " " + scene.labels[Number(slider.value) - 1];
  };
  row.appendChild(document.createTextNode("date "));
  row.appendChild(slider);
  row.appendChild(shown);
  document.getElementById("layers").appendChild(row);
  for (const [id, label, visible] of outputs) toggle(map, id, label, visible);
  toggle(map, "polygons-outline", "change polygons", true);
  document.getElementById("legend").appendChild(document.createTextNode("first changed at"));
  for (let k = 2; k <= N; k++) legendRow(hex(scene.colours[k - 1]), scene.labels[k - 1]);
  const dates = (p) => "first " + p.first_label + ", last " + p.last_label + " (" + p.n + "\u00d7)";
  polygonList(map, polygons, (p) => "change #" + p.rank + "<br>" + dates(p) + "<br>area " + area(p) + "<br>" + p.pixels + " px",
              (p) => "#" + p.rank + "  " + dates(p) + "  " + area(p));
}
