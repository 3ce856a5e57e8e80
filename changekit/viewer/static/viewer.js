// changekit view: the input image(s), the output layers and the polygons of one scene run on a MapLibre map.
// A change run shows both dates, the change probability and map; a segmentation run the image, the class map
// (the classes' palette, with a legend) and the confidence of the chosen class.
(async function () {
  const scene = await (await fetch("/scene.json")).json();
  const polygons = await (await fetch("/polygons.geojson")).json();
  const seg = scene.task === "segmentation";
  const [w, s, e, n] = scene.bounds;
  const tiles = (layer) => ({
    type: "raster", tiles: [location.origin + "/tiles/" + layer + "/{z}/{x}/{y}.png"], tileSize: 256,
    bounds: scene.bounds, maxzoom: 22,
  });
  const hex = (c) => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
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
  const sources = { polygons: { type: "geojson", data: polygons } };
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#202020" } }];
  for (const [id, , opacity, visible] of rasters) {
    sources[id] = tiles(id);
    layers.push({ id, type: "raster", source: id, paint: { "raster-opacity": opacity },
                  layout: { visibility: visible ? "visible" : "none" } });
  }
  layers.push({ id: "polygons-fill", type: "fill", source: "polygons",
                paint: { "fill-color": seg ? lineColor : "#ff3030", "fill-opacity": 0.05 } });
  layers.push({ id: "polygons-outline", type: "line", source: "polygons",
                paint: { "line-color": lineColor, "line-width": seg ? 1 : 1.5 } });
  const map = new maplibregl.Map({
    container: "map", style: { version: 8, sources, layers }, bounds: [[w, s], [e, n]],
    fitBoundsOptions: { padding: 20 }, maxZoom: 22, attributionControl: false, preserveDrawingBuffer: true,
  });
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
  map.once("idle", () => { document.body.dataset.ready = "1"; });
  document.getElementById("info").textContent = (scene.crs || "no CRS") + " \u2022 window " + scene.window +
    (seg ? " \u2022 " + scene.class_names.length + " classes" : " \u2022 threshold " + scene.threshold);

  // the layer switches (and the date-2 opacity slider of a change run)
  const panel = document.getElementById("layers");
  const toggle = (id, label, checked, swatch) => {
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
    panel.appendChild(row);
  };
  for (const [id, label, , visible, swatch] of rasters) {
    toggle(id, label, visible, swatch);
    if (id === "t2") {
      const row = document.createElement("label");
      row.textContent = "date 2 opacity ";
      const slider = document.createElement("input");
      slider.type = "range"; slider.min = 0; slider.max = 100; slider.value = 50;
      slider.oninput = () => map.setPaintProperty("t2", "raster-opacity", Number(slider.value) / 100);
      row.appendChild(slider);
      panel.appendChild(row);
    }
  }
  toggle("polygons-outline", seg ? "class polygons" : "change polygons", true);
  if (seg) {  // the legend: each class's colour and name
    const legend = document.getElementById("legend");
    scene.class_names.forEach((name, i) => {
      const row = document.createElement("div");
      const sw = document.createElement("span");
      sw.className = "legend"; sw.style.background = hex(scene.palette[i]); sw.style.border = "1px solid #999";
      row.appendChild(sw);
      row.appendChild(document.createTextNode(i + " " + name));
      legend.appendChild(row);
    });
    document.getElementById("list-title").textContent = "Regions";
  }

  const describe = (p) => (seg ? p.class_name + " #" : "change #") + p.rank;
  // m² where the scene has a CRS (geodesic on geographic rasters), else the raster's own units
  const area = (p) => (p.area_m2 !== null && p.area_m2 !== undefined)
    ? Math.round(Number(p.area_m2)).toLocaleString("en") + " m\u00b2" : Number(p.area).toFixed(1) + " (CRS units\u00b2)";
  map.on("click", "polygons-fill", (ev) => {
    const p = ev.features[0].properties;
    new maplibregl.Popup().setLngLat(ev.lngLat)
      .setHTML(describe(p) + "<br>area " + area(p) + "<br>" + p.pixels + " px")
      .addTo(map);
  });
  const list = document.getElementById("list");
  document.getElementById("count").textContent = "(" + polygons.features.length + ")";
  for (const f of polygons.features.slice(0, 500)) {  // sorted by area by the server
    const li = document.createElement("li");
    li.textContent = "#" + f.properties.rank + (seg ? "  " + f.properties.class_name : "") +
      "  " + area(f.properties);
    li.onclick = () => {
      const xs = [], ys = [];
      for (const ring of f.geometry.coordinates) for (const [x, y] of ring) { xs.push(x); ys.push(y); }
      map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], { padding: 80, maxZoom: 21 });
    };
    list.appendChild(li);
  }
})();
