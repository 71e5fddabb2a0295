// ESLint for the portal's own browser code (static/console/); third-party clients are not ours.
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["static/console/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-unused-vars": ["error", { caughtErrors: "none" }],
    },
  },
  {
    // A classic script, not a module: it runs before the page's modules.
    files: ["static/console/ticket-prefetch.js", "static/console/vm-list.js"],
    languageOptions: { sourceType: "script" },
  },
];
