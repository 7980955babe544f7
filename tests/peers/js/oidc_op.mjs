// A real OpenID provider (the certified `oidc-provider` package) on loopback, for rolegate's
// sign-in tests. The only code of ours is the sign-in page: a username/password form whose
// answer finishes the login and grants the requested scopes (no consent screen).
//
//   node oidc_op.mjs '{"port":0,"clients":[...],"accounts":{"alice":{"password":"pw","claims":{...}}}}'
//
// Prints one line `{"issuer":"http://127.0.0.1:PORT"}` once it listens.
import http from 'node:http';
import { Provider } from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const accounts = config.accounts ?? {};

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const server = http.createServer();
await new Promise((resolve) => server.listen(config.port ?? 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  cookies: { keys: ['rolegate-test-only-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scope claims in the id_token too (rolegate reads the id_token, not userinfo).
  conformIdTokenClaims: false,
  // The device flow is for `rolegate credentials --flow device` (a laptop without a browser).
  features: { devInteractions: { enabled: false }, deviceFlow: { enabled: true } },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account.claims }) };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AuthorizationCode: 60, Session: 600, Interaction: 600, Grant: 600, IdToken: 300, AccessToken: 300 },
});

function page(uid, error) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Example IdP sign-in</title>
<style>body{font:16px system-ui,sans-serif;background:#eef1f5;margin:0}main{max-width:22rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:10px;box-shadow:0 1px 4px #0002}
label{display:block;margin:.7rem 0 .2rem;font-weight:600}input{width:100%;padding:.5rem;box-sizing:border-box}button{margin-top:1rem;width:100%;padding:.6rem;background:#5b3cc4;color:#fff;border:0;border-radius:6px;font:inherit}</style></head>
<body><main><h1>Example IdP</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<label for="login">Username</label><input id="login" name="login" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit">Sign in</button></form></main></body></html>`;
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(details.uid));
    return;
  }
  const form = await body(req);
  const id = form.get('login') ?? '';
  const account = accounts[id];
  if (!account || account.password !== form.get('password')) {
    res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(details.uid, 'Wrong username or password.'));
    return;
  }
  const grant = new provider.Grant({ accountId: id, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope ?? 'openid'));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: id }, consent: { grantId } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}`);
    });
  } else {
    callback(req, res);
  }
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
