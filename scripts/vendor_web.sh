#!/usr/bin/env bash
# Rebuilds src/tddfa/serve/static/vendor/ from the npm registry (needs node + npm; run by hand
# when upgrading, not by CI). three.js: only the classes the page uses plus GLTFLoader and
# OrbitControls, bundled and minified with esbuild into one ES module. Swagger UI: the two files
# FastAPI's /docs page needs. Both MIT / Apache-2.0; their licence files are copied beside them.
set -euo pipefail
THREE=${THREE:-0.187.0}
SWAGGER=${SWAGGER:-5.35.0}
ESBUILD=${ESBUILD:-0.28.2}
out="$(cd "$(dirname "$0")/.." && pwd)/src/tddfa/serve/static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm init -y >/dev/null
npm install --silent "three@$THREE" "esbuild@$ESBUILD" "swagger-ui-dist@$SWAGGER"
cat > entry.js <<'JS'
export { Scene, PerspectiveCamera, WebGLRenderer, AmbientLight, DirectionalLight, HemisphereLight,
         Color, Box3, Vector3, MeshStandardMaterial, DoubleSide, SRGBColorSpace } from 'three';
export { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
export { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
JS
npx esbuild entry.js --bundle --format=esm --minify --legal-comments=none --outfile="$out/three-viewer.min.js"
cp node_modules/three/LICENSE "$out/LICENSE-three.txt"
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css "$out/"
cp node_modules/swagger-ui-dist/LICENSE "$out/LICENSE-swagger-ui.txt"
cp node_modules/swagger-ui-dist/NOTICE "$out/NOTICE-swagger-ui.txt"
echo "vendored three $THREE and swagger-ui-dist $SWAGGER into $out"
