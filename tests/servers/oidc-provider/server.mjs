// Test authorization server for the `client-credentials` crate's integration
// tests: node `oidc-provider` (OpenID Certified) configured for the OAuth 2.0
// client credentials grant with every client authentication method, DPoP
// (optionally with required nonces), mTLS client authentication and
// certificate-bound tokens, introspection and JWT access tokens.
//
// Protocol with the test harness:
//   * stdout carries exactly one line, `READY <issuer>\n`, once listening.
//   * everything else (oidc-provider notices, errors) goes to stderr.
//   * the process exits when its stdin closes, so a dying test cannot leak it.
//
// See README.md in this directory for the environment variables.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

// ---------------------------------------------------------------------------
// stdout discipline: oidc-provider prints its NOTICEs with console.info, i.e.
// to stdout. Route every console method to stderr *before* importing it, and
// keep a private handle on the real stdout for the READY line.
// ---------------------------------------------------------------------------
const writeStdout = process.stdout.write.bind(process.stdout);
for (const method of ['log', 'info', 'debug', 'trace', 'dir']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

// Exit when the parent goes away (stdin EOF). `PORT`-started manual runs from
// a terminal can set KEEP_ALIVE=1 to ignore stdin.
if (process.env.KEEP_ALIVE !== '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

function fail(message, cause) {
  console.error(`server.mjs: ${message}`);
  if (cause) console.error(cause);
  process.exit(1);
}

const { default: Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------
const env = process.env;
const HOST = '127.0.0.1';
const PORT = env.PORT ? Number.parseInt(env.PORT, 10) : 0;
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail(`invalid PORT ${env.PORT}`);

const API_RESOURCE = 'https://api.example.test';
const OPAQUE_RESOURCE = 'https://opaque.example.test';
const RESOURCE_SCOPE = 'api:read api:write';
// DEFAULT_RESOURCE unset -> https://api.example.test (JWT access tokens);
// DEFAULT_RESOURCE= (empty) or `none` -> no default: opaque tokens unless the
// client sends a `resource` parameter.
const DEFAULT_RESOURCE = env.DEFAULT_RESOURCE === undefined
  ? API_RESOURCE
  : (['', 'none'].includes(env.DEFAULT_RESOURCE) ? undefined : env.DEFAULT_RESOURCE);

const ACCESS_TOKEN_TTL = env.ACCESS_TOKEN_TTL ? Number.parseInt(env.ACCESS_TOKEN_TTL, 10) : 600;
if (!Number.isInteger(ACCESS_TOKEN_TTL) || ACCESS_TOKEN_TTL <= 0) fail(`invalid ACCESS_TOKEN_TTL ${env.ACCESS_TOKEN_TTL}`);

// DPoP nonces: off (default) | optional | required.
//   off      - no nonce secret: the server never issues nonces and rejects
//              proofs that carry one (400 invalid_dpop_proof).
//   optional - nonces are issued (DPoP-Nonce response header) and accepted,
//              but only required for clients listed in DPOP_NONCE_CLIENTS.
//   required - every DPoP proof must carry a valid server nonce.
const DPOP_NONCE = (env.DPOP_NONCE || 'off').toLowerCase();
if (!['off', 'optional', 'required'].includes(DPOP_NONCE)) fail(`invalid DPOP_NONCE ${env.DPOP_NONCE} (off|optional|required)`);
const DPOP_NONCE_CLIENTS = new Set((env.DPOP_NONCE_CLIENTS || '').split(',').map((s) => s.trim()).filter(Boolean));
const nonceEnabled = DPOP_NONCE !== 'off' || DPOP_NONCE_CLIENTS.size > 0;
let nonceSecret;
if (nonceEnabled) {
  if (env.DPOP_NONCE_SECRET) {
    nonceSecret = Buffer.from(env.DPOP_NONCE_SECRET, 'hex');
    if (nonceSecret.byteLength !== 32) fail('DPOP_NONCE_SECRET must be 64 hex characters (32 bytes)');
  } else {
    nonceSecret = crypto.randomBytes(32);
  }
}

// Clients
let clients;
try {
  if (env.CLIENTS_JSON) {
    clients = JSON.parse(env.CLIENTS_JSON);
  } else if (env.CLIENTS_FILE) {
    clients = JSON.parse(fs.readFileSync(env.CLIENTS_FILE, 'utf8'));
  } else {
    fail('set CLIENTS_FILE (path to a JSON array of client metadata) or CLIENTS_JSON');
  }
} catch (err) {
  fail('could not read clients', err);
}
if (!Array.isArray(clients)) fail('clients JSON must be an array of client metadata objects');
// Convenience defaults for client-credentials-only clients.
clients = clients.map((c) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  ...c,
}));

// TLS
const tls = Boolean(env.TLS_CERT || env.TLS_KEY);
let tlsOptions;
if (tls) {
  if (!env.TLS_CERT || !env.TLS_KEY) fail('TLS_CERT and TLS_KEY must both be set');
  try {
    tlsOptions = {
      cert: fs.readFileSync(env.TLS_CERT),
      key: fs.readFileSync(env.TLS_KEY),
      ...(env.TLS_CA ? { ca: fs.readFileSync(env.TLS_CA) } : {}),
      // Ask for a client certificate but do not fail the handshake without
      // one (or with a self-signed one): oidc-provider decides per client.
      requestCert: true,
      rejectUnauthorized: false,
    };
  } catch (err) {
    fail('could not read TLS files', err);
  }
}

// ---------------------------------------------------------------------------
// Signing keys of the authorization server (fresh per process). ES256 signs
// the JWT access tokens; RS256 is the oidc-provider default for id tokens.
// Published at <issuer>/jwks.
// ---------------------------------------------------------------------------
function signingJwk(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(4).toString('hex')}` };
}
const jwks = {
  keys: [
    signingJwk('ec', { namedCurve: 'P-256' }, 'ES256'),
    signingJwk('rsa', { modulusLength: 2048 }, 'RS256'),
    signingJwk('ed25519', undefined, 'EdDSA'),
  ],
};

// ---------------------------------------------------------------------------
// mTLS helpers
// ---------------------------------------------------------------------------
function peerCertificate(ctx) {
  const { socket } = ctx.req;
  if (typeof socket?.getPeerCertificate !== 'function') return undefined;
  const peer = socket.getPeerCertificate(false);
  if (!peer?.raw) return undefined;
  return new crypto.X509Certificate(peer.raw);
}

// "CN=a, O=b" / "CN=a\nO=b" / "O=b,CN=a" -> sorted multiset of TYPE=value.
function normalizeDn(dn) {
  return dn
    .split(/(?<!\\)[,\n+]/)
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const i = part.indexOf('=');
      if (i === -1) return part;
      return `${part.slice(0, i).trim().toUpperCase()}=${part.slice(i + 1).trim()}`;
    })
    .sort()
    .join(',');
}

function subjectAltNames(cert, prefix) {
  return (cert.subjectAltName || '')
    .split(', ')
    .filter((entry) => entry.startsWith(prefix))
    .map((entry) => entry.slice(prefix.length));
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------
const configuration = {
  clients,
  jwks,
  // ALLOW_LOOPBACK_FETCH=1: fetch client `jwks_uri`s on loopback (a test's stand-in for a
  // cluster issuer). oidc-provider refuses special-use addresses by default (SSRF protection);
  // this server only ever runs on loopback for tests.
  ...(env.ALLOW_LOOPBACK_FETCH === '1' ? {
    fetch: (url, options) => {
      const { dispatcher: _ssrfProtected, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
  } : {}),
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  clientAuthMethods: [
    'client_secret_basic',
    'client_secret_post',
    'client_secret_jwt',
    'private_key_jwt',
    'tls_client_auth',
    'self_signed_tls_client_auth',
    'none',
  ],
  enabledJWA: {
    clientAuthSigningAlgValues: [
      'HS256', 'HS384', 'HS512',
      'RS256', 'RS384', 'RS512',
      'PS256', 'PS384', 'PS512',
      'ES256', 'ES384', 'ES512',
      'Ed25519', 'EdDSA',
    ],
    dPoPSigningAlgValues: [
      'ES256', 'ES384', 'ES512',
      'PS256', 'PS384', 'PS512',
      'RS256', 'RS384', 'RS512',
      'Ed25519', 'EdDSA',
    ],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
    AccessToken: ACCESS_TOKEN_TTL,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated client may introspect any token (test server).
      allowedPolicy: async () => true,
    },
    revocation: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret,
      requireNonce: (ctx) => {
        if (!nonceEnabled) return false;
        if (DPOP_NONCE === 'required') return true;
        const clientId = ctx.oidc?.client?.clientId;
        return clientId !== undefined && DPOP_NONCE_CLIENTS.has(clientId);
      },
    },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      // PEM of the certificate the client presented in the TLS handshake.
      getCertificate: (ctx) => peerCertificate(ctx)?.toString(),
      // tls_client_auth (PKI): the chain must verify against TLS_CA.
      certificateAuthorized: (ctx) => Boolean(ctx.req.socket?.authorized),
      certificateSubjectMatches: (ctx, property, expected) => {
        const cert = peerCertificate(ctx);
        if (!cert) return false;
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return normalizeDn(cert.subject) === normalizeDn(expected);
          case 'tls_client_auth_san_dns':
            return subjectAltNames(cert, 'DNS:').includes(expected);
          case 'tls_client_auth_san_ip':
            return subjectAltNames(cert, 'IP Address:').includes(expected);
          case 'tls_client_auth_san_email':
            return subjectAltNames(cert, 'email:').includes(expected);
          case 'tls_client_auth_san_uri':
            return subjectAltNames(cert, 'URI:').includes(expected);
          default:
            return false;
        }
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => {
        if (oneOf) return oneOf;
        return DEFAULT_RESOURCE;
      },
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator === API_RESOURCE) {
          return {
            scope: RESOURCE_SCOPE,
            audience: API_RESOURCE,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resourceIndicator === OPAQUE_RESOURCE) {
          return {
            scope: RESOURCE_SCOPE,
            audience: OPAQUE_RESOURCE,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'opaque',
          };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
};

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------
const server = tls ? https.createServer(tlsOptions) : http.createServer();
server.on('error', (err) => fail('server error', err));
await new Promise((resolve) => { server.listen(PORT, HOST, resolve); });
const { port } = server.address();
const issuer = `${tls ? 'https' : 'http'}://${HOST}:${port}`;

let provider;
try {
  provider = new Provider(issuer, configuration);
} catch (err) {
  fail('invalid oidc-provider configuration', err);
}
// TLS is terminated by this very process, so no X-Forwarded-* trust.
provider.proxy = false;

// Validate every client now so that a bad CLIENTS_FILE fails fast (no READY).
for (const { client_id: clientId } of clients) {
  try {
    // eslint-disable-next-line no-await-in-loop
    const client = await provider.Client.find(clientId);
    if (!client) throw new Error('not found');
  } catch (err) {
    fail(`invalid client ${JSON.stringify(clientId)}: ${err.error_description || err.message}`, err.cause);
  }
}

// Error diagnostics on stderr (error_detail is not sent to the client).
function logError(event) {
  return (ctx, err) => {
    const causes = [];
    for (let c = err.cause; c && causes.length < 4; c = c.cause) {
      causes.push(c.error_description || c.message || String(c));
    }
    const cause = causes.length ? ` caused by: ${causes.join(': ')}` : '';
    const detail = err.error_detail ? ` (${err.error_detail})${cause}` : cause;
    const description = err.error_description ? `: ${err.error_description}` : '';
    console.error(`[oidc-provider] ${event} ${ctx?.method} ${ctx?.path} client=${ctx?.oidc?.client?.clientId ?? '-'} ${err.error || err.name}${description}${detail}`);
  };
}
for (const event of [
  'grant.error', 'introspection.error', 'revocation.error', 'discovery.error', 'jwks.error',
]) {
  provider.on(event, logError(event));
}
provider.on('server_error', (ctx, err) => {
  console.error('[oidc-provider] server_error', err);
});

server.on('request', provider.callback());

writeStdout(`READY ${issuer}\n`);
