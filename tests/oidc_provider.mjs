// The identity provider of the single sign-on tests: node-oidc-provider (npm, pinned in
// package.json), a certified OpenID Connect provider library, run as a process of its own on
// loopback. Usage: node tests/oidc_provider.mjs CONFIG.json
//
// CONFIG: {"port", "clients": [...], "accounts": PATH, "tamper": PATH}. The accounts file is read
// at every request, so a test changes someone's groups (or disables them) by rewriting it:
// {"alice": {"name": "...", "email": "...", "groups": ["..."], "disabled": false}}. Sign-in is the
// library's development interaction (any password). The tamper file, when it names a mode,
// makes the token endpoint answer with a forged ID token, re-signed with the provider's own key
// unless the mode is "signature": {"mode": "signature"|"audience"|"issuer"|"expired"|"nonce"}.
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

import * as jose from "jose";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const issuer = `http://127.0.0.1:${config.port}`;

async function signingKey() {
  const { privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: "portal-test-key", alg: "RS256", use: "sig" };
}

const key = await signingKey();
const forgerKey = await signingKey(); // the same kid, another key: a forged signature

function readJson(path, fallback) {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return fallback;
  }
}

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [key] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  scopes: ["openid", "offline_access", "profile", "email", "groups"],
  claims: {
    openid: ["sub"],
    profile: ["name", "preferred_username"],
    email: ["email"],
    groups: ["groups"],
  },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  pkce: { required: () => true },
  issueRefreshToken: async () => true,
  ttl: { AccessToken: config.accessTokenSeconds ?? 3600 },
  async findAccount(ctx, id) {
    const account = readJson(config.accounts, {})[id];
    if (!account || account.disabled) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: account.username ?? id,
          name: account.name,
          email: account.email,
          groups: account.groups ?? [],
        };
      },
    };
  },
});

async function forged(idToken, mode) {
  const payload = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const changes = {
    // Another application's token, naming this one as the authorized party.
    audience: { aud: "another-application", azp: payload.aud },
    issuer: { iss: "http://127.0.0.1:1/impostor" },
    expired: { iat: now - 7200, exp: now - 3600 },
    nonce: { nonce: "a-replayed-nonce" },
  };
  const signer = mode === "signature" ? forgerKey : key;
  return new jose.SignJWT({ ...payload, ...(changes[mode] ?? {}) })
    .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" })
    .sign(await jose.importJWK(signer, "RS256"));
}

provider.use(async (ctx, next) => {
  await next();
  const mode = readJson(config.tamper, {}).mode;
  if (mode && ctx.path === "/token" && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await forged(ctx.body.id_token, mode) };
  }
});

provider.listen(config.port, "127.0.0.1", () => {
  console.log(`identity provider at ${issuer}`);
});
