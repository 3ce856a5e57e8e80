// changekit view: both dates, the change layers and the polygons of one scene run on a MapLibre map.
(async function () {
  const scene = await (await fetch("/scene.json")).json();
  const changes = await (await fetch("/changes.geojson")).json();
  const [w, s, e, n] = scene.bounds;
  const tiles = (layer) => ({
    type: "raster", tiles: [location.origin + "/tiles/" + layer + "/{z}/{x}/{y}.png"], tileSize: 256,
    bounds: scene.bounds, maxzoom: 22,
  });
  const style = {
    version: 8,
    sources: { t1: tiles("t1"), t2: tiles("t2"), probability: tiles("probability"), change: tiles("change"),
               changes: { type: "geojson", data: changes } },
    layers: [
      { id: "background", type: "background", paint: { "background-color": "#202020" } },
      { id: "t1", type: "raster", source: "t1" },
      { id: "t2", type: "raster", source: "t2", paint: { "raster-opacity": 0.5 } },
      { id: "probability", type: "raster", source: "probability", paint: { "raster-opacity": 0.6 } },
      { id: "change", type: "raster", source: "change", paint: { "raster-opacity": 0.8 } },
      { id: "polygons-fill", type: "fill", source: "changes", paint: { "fill-color": "#ff3030", "fill-opacity": 0.05 } },
      { id: "polygons-outline", type: "line", source: "changes", paint: { "line-color": "#ff3030", "line-width": 1.5 } },
    ],
  };
  const map = new maplibregl.Map({
    container: "map", style, bounds: [[w, s], [e, n]], fitBoundsOptions: { padding: 20 },
    maxZoom: 22, attributionControl: false, preserveDrawingBuffer: true,
  });
  map.addControl(new maplibregl.NavigationControl(), "top-left");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
  map.once("idle", () => { document.body.dataset.ready = "1"; });
  document.getElementById("info").textContent =
    (scene.crs || "no CRS") + " \u2022 window " + scene.window + " \u2022 threshold " + scene.threshold;

  map.on("click", "polygons-fill", (ev) => {
    const p = ev.features[0].properties;
    new maplibregl.Popup().setLngLat(ev.lngLat)
      .setHTML("change #" + p.rank + "<br>area " + Number(p.area).toFixed(1) + " (CRS units\u00b2)<br>" + p.pixels + " px")
      .addTo(map);
  });
  const list = document.getElementById("list");
  document.getElementById("count").textContent = "(" + changes.features.length + ")";
  for (const f of changes.features.slice(0, 500)) {  // sorted by area by the server
    const li = document.createElement("li");
    li.textContent = "#" + f.properties.rank + "  area " + Number(f.properties.area).toFixed(1);
    li.onclick = () => {
      const xs = [], ys = [];
      for (const ring of f.geometry.coordinates) for (const [x, y] of ring) { xs.push(x); ys.push(y); }
      map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], { padding: 80, maxZoom: 21 });
    };
    list.appendChild(li);
  }

  for (const box of document.querySelectorAll("input[data-layer]")) {
    box.onchange = () => {
      const vis = box.checked ? "visible" : "none";
      map.setLayoutProperty(box.dataset.layer, "visibility", vis);
      if (box.dataset.layer === "polygons-outline") map.setLayoutProperty("polygons-fill", "visibility", vis);
    };
  }
  document.getElementById("swipe").oninput = (ev) =>
    map.setPaintProperty("t2", "raster-opacity", Number(ev.target.value) / 100);
})();
