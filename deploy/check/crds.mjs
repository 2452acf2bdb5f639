// Validates custom resources against the OpenAPI schemas of their CRDs, as shipped in the
// @kubernetes-models packages (package.json pins them). Usage:
//   node crds.mjs NODE_MODULES_DIR objects.json
// objects.json is a JSON array of rendered objects; built-in kinds are skipped (kubernetes-validate checks
// them), a custom kind without a known schema fails.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MODELS = {
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};
const BUILT_IN = /^(v1|apps\/v1|batch\/v1|policy\/v1|autoscaling\/v2|networking\.k8s\.io\/v1|rbac\.authorization\.k8s\.io\/v1)$/;

const [modulesDir, objectsFile] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(objectsFile, "utf8"));
let failures = 0;
let checked = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name} (${obj.apiVersion})`;
  if (BUILT_IN.test(obj.apiVersion)) continue;
  const [group, version] = obj.apiVersion.split("/");
  const pkg = MODELS[group];
  if (!pkg) {
    console.error(`no CRD schema for ${name}`);
    failures++;
    continue;
  }
  const file = join(modulesDir, pkg, group, version, `${obj.kind}.js`);
  let model;
  try {
    model = await import(pathToFileURL(file).href);
  } catch {
    console.error(`no CRD schema for ${name} in ${pkg}`);
    failures++;
    continue;
  }
  try {
    new model[obj.kind](obj).validate();
    checked++;
  } catch (err) {
    console.error(`${name}: ${err.message}`);
    failures++;
  }
}
if (failures) process.exit(1);
console.log(`crds: ${checked} custom resources valid`);
