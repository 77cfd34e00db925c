// A real OpenID Provider (npm oidc-provider) for the sign-in tests, on 127.0.0.1:<port>.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG: {"port", "clients": [...], "accounts": "accounts.json", "tamper": "tamper.json"}.
// accounts.json ({"dana": {"groups": ["oyster-admins"]}}) and tamper.json ({"mode": "expired"})
// are read at each use, so a test changes a user's groups, or makes the token endpoint answer
// with a spoiled ID token, by rewriting a file. Anyone may sign in with any password (the
// package's development login page); PKCE is required of every client.
import { readFileSync } from 'node:fs';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const readJson = (path, fallback) => {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return fallback;
  }
};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
// The key a forger would have: a different one, under the real key's id.
const forger = (await jose.generateKeyPair('RS256', { extractable: true })).privateKey;

const issuer = `http://127.0.0.1:${config.port}`;
const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: ['oyster-test-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
  },
  // The claims go into the ID token, as Entra ID and Keycloak put groups there.
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      const account = readJson(config.accounts, {})[id] || {};
      return {
        sub: id,
        preferred_username: account.username || id,
        name: id,
        email: `${id}@example.org`,
        groups: account.groups || [],
      };
    },
  }),
  // Consent is taken as given: the tests sign in, they do not click through a consent page.
  loadExistingGrant: async (ctx) => {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const found = await Grant.find(grantId);
      if (found) return found;
    }
    const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['sub', 'preferred_username', 'name', 'email', 'groups']);
    await grant.save();
    return grant;
  },
});

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function spoil(idToken, mode) {
  const [, payloadPart] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payloadPart, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  let key = privateKey;
  let alg = 'RS256';
  if (mode === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  else if (mode === 'wrong-aud') claims.aud = 'someone-else';
  else if (mode === 'wrong-iss') claims.iss = 'http://127.0.0.1:1';
  else if (mode === 'wrong-nonce') claims.nonce = 'not-the-nonce';
  else if (mode === 'forged') key = forger;
  else if (mode === 'alg-none') return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  else if (mode === 'no-id-token') return undefined;
  else throw new Error(`unknown tamper mode ${mode}`);
  return new jose.SignJWT(claims).setProtectedHeader({ alg, kid: 'test-key', typ: 'JWT' }).sign(key);
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/token') {
    // A token endpoint that fails, or answers only after the portal stopped waiting.
    const { mode } = readJson(config.tamper, {});
    if (mode === 'token-down') {
      ctx.status = 503;
      ctx.body = '<html>Service Unavailable</html>';
      return;
    }
    if (mode === 'token-slow') await new Promise((resolve) => setTimeout(resolve, 4000));
  }
  await next();
  if (ctx.path === '/token' && ctx.body && ctx.body.id_token) {
    const { mode } = readJson(config.tamper, {});
    if (mode) {
      const spoiled = await spoil(ctx.body.id_token, mode);
      if (spoiled === undefined) delete ctx.body.id_token;
      else ctx.body.id_token = spoiled;
    }
  }
});

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening on ${issuer}`);
});
