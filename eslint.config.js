// ESLint (flat config) for the agent's web page: its own ES modules in static/js, run in a
// browser. The vendored third-party files in static/vendor are not ours to lint.
// Installed by scripts/install-tools.sh (`npm ci`, versions in package-lock.json);
// run by `make lint` (scripts/lint-extra.sh) and tests/agent/test_eslint.py.
import js from "@eslint/js";
import { defineConfig, globalIgnores } from "eslint/config";
import globals from "globals";

const STATIC = "services/agent/src/ragkeeper_agent/static";

export default defineConfig([
  globalIgnores([`${STATIC}/vendor/**`, ".venv/**", ".tools/**", ".local/**", "test-artifacts/**"]),
  {
    files: [`${STATIC}/js/**/*.js`],
    extends: [js.configs.recommended],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    linterOptions: {
      reportUnusedDisableDirectives: "error",
    },
  },
  {
    files: ["eslint.config.js"],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: "module", globals: { ...globals.node } },
  },
]);
