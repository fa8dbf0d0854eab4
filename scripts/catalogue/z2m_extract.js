// Extract from a pinned zigbee-herdsman-converters the device definitions the SOS catalogue may need.
//
// Maintainer tool (needs network once): scripts/catalogue/z2m-refresh VERSION installs the package with npm
// into a temporary directory and runs this file there; it writes zigbee-herdsman-converters.json next to
// it. The generator (z2m.py) and the test read only that committed extract, never the network.
//
// Kept per definition (for every definition whose exposes or description mention an emergency, panic,
// SOS or alarm): source file, vendor, model, description, white labels, the values of its `action` enum,
// and its binary exposes (property, value_on, value_off). Exposes given as a function are evaluated
// without a device (what zigbee2mqtt documents for the model).
"use strict";
const fs = require("fs");
const path = require("path");
const z = require("zigbee-herdsman-converters");
const pkg = require("zigbee-herdsman-converters/package.json");

const WORDS = /(emergency|panic|sos|alarm)/i;
const dir = path.join(path.dirname(require.resolve("zigbee-herdsman-converters")), "devices");

function flat(list, acc) {
  for (const e of list || []) {
    if (!e) continue;
    acc.push(e);
    if (e.features) flat(e.features, acc);
  }
  return acc;
}

const out = [];
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".js") && f !== "index.js").sort()) {
  const mod = require(path.join(dir, file));
  for (const raw of mod.definitions || []) {
    let def = raw;
    try { def = z.prepareDefinition(raw); } catch (err) { def = raw; }
    let exposes = def.exposes;
    if (typeof exposes === "function") {
      try { exposes = exposes(undefined, {}); } catch (err) { exposes = []; }
    }
    const all = flat(exposes, []);
    const actions = [];
    const binaries = [];
    for (const e of all) {
      if (e.property === "action" && Array.isArray(e.values)) actions.push(...e.values.filter((v) => typeof v === "string"));
      if (e.type === "binary" && e.property) binaries.push({property: e.property, value_on: e.value_on, value_off: e.value_off});
    }
    const relevant = actions.some((v) => WORDS.test(v)) || binaries.some((b) => WORDS.test(b.property))
      || WORDS.test(def.description || "");
    if (!relevant) continue;
    out.push({
      file: file.replace(/\.js$/, ".ts"),
      vendor: def.vendor,
      model: def.model,
      description: def.description,
      white_labels: (def.whiteLabel || []).map((w) => [w.vendor || def.vendor, w.model].join(" ")),
      actions: [...new Set(actions)],
      binaries,
    });
  }
}
out.sort((a, b) => (a.vendor + a.model).localeCompare(b.vendor + b.model));
const extract = {
  source: "zigbee-herdsman-converters (npm), src/devices/*.ts",
  repository: "https://github.com/Koenkk/zigbee-herdsman-converters",
  version: pkg.version,
  licence: pkg.license,
  selection: "definitions whose exposes (action values, binary properties) or description mention emergency, panic, sos or alarm",
  definitions: out,
};
fs.writeFileSync(process.argv[2], JSON.stringify(extract, null, 1) + "\n");
console.error(`${out.length} definitions of zigbee-herdsman-converters ${pkg.version} written to ${process.argv[2]}`);
