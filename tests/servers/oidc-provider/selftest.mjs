// Self-test of server.mjs without Rust: starts the server as a child process
// (several times, with different settings), talks to it over 127.0.0.1 only,
// and checks every client authentication method, DPoP (with and without
// required nonces), jti replay detection and mTLS.
//
//   node selftest.mjs        # prints one line per check, then "N passed, N failed"
//
// Needs: `npm ci` done in this directory, and the `openssl` CLI (test
// certificates). Uses only `jose` (a dependency of oidc-provider) and node.

import { spawn, execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  SignJWT, calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair,
} from 'jose';

const here = path.dirname(fileURLToPath(import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oidc-selftest-'));

// ---------------------------------------------------------------------------
// tiny test harness
// ---------------------------------------------------------------------------
let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${name}: ${err.message}`);
  }
}
function assert(cond, message) {
  if (!cond) throw new Error(message);
}
function expectToken(res, what = 'token') {
  assert(res.status === 200, `expected 200 for ${what}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert(typeof res.body.access_token === 'string', 'no access_token');
  return res.body;
}
function expectError(res, status, error) {
  assert(res.status === status && res.body?.error === error,
    `expected ${status} ${error}, got ${res.status} ${JSON.stringify(res.body)}`);
}

// ---------------------------------------------------------------------------
// HTTP(S) client (node http/https: needed for client certificates anyway)
// ---------------------------------------------------------------------------
function request(url, { method = 'POST', form, headers = {}, tls } = {}) {
  const u = new URL(url);
  const body = form ? new URLSearchParams(form).toString() : undefined;
  const lib = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(u, {
      method,
      agent: false,
      headers: {
        accept: 'application/json',
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
        ...headers,
      },
      ...(tls || {}),
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch { json = text; }
        resolve({ status: res.statusCode, headers: res.headers, body: json });
      });
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

// ---------------------------------------------------------------------------
// server process
// ---------------------------------------------------------------------------
async function startServer(clients, extraEnv = {}) {
  const clientsFile = path.join(tmp, `clients-${crypto.randomUUID()}.json`);
  fs.writeFileSync(clientsFile, JSON.stringify(clients, null, 2));
  const child = spawn(process.execPath, [path.join(here, 'server.mjs')], {
    env: { ...process.env, CLIENTS_FILE: clientsFile, ...extraEnv },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const issuer = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`server did not become ready\n${stderr}`)), 15000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const nl = stdout.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        const line = stdout.slice(0, nl);
        const m = /^READY (\S+)$/.exec(line);
        if (m) resolve(m[1]); else reject(new Error(`unexpected stdout line ${JSON.stringify(line)}`));
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited with ${code}\n${stderr}`)); });
  });
  let extraStdout = '';
  child.stdout.on('data', (d) => { extraStdout += d; });
  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    introspectionUrl: `${issuer}/token/introspection`,
    stderr: () => stderr,
    extraStdout: () => extraStdout,
    async stop() {
      // Closing stdin is how the server is told to go away.
      const exited = new Promise((resolve) => { child.on('exit', (code) => resolve(code)); });
      child.stdin.end();
      return exited;
    },
  };
}

// ---------------------------------------------------------------------------
// keys, assertions, DPoP proofs
// ---------------------------------------------------------------------------
async function keyPair(alg) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  jwk.kid = `${alg}-${crypto.randomBytes(3).toString('hex')}`;
  return { alg, privateKey, jwk };
}

async function assertion(clientId, key, aud, {
  jti = crypto.randomUUID(), typ, omit = [], alg = key.alg, extra = {},
} = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: clientId, sub: clientId, aud, jti, iat: now, exp: now + 60, ...extra,
  };
  for (const claim of omit) delete payload[claim];
  const header = { alg, ...(key.jwk ? { kid: key.jwk.kid } : {}), ...(typ ? { typ } : {}) };
  return new SignJWT(payload).setProtectedHeader(header).sign(key.privateKey);
}

function jwtForm(clientAssertion, scope = 'api:read') {
  return {
    grant_type: 'client_credentials',
    scope,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: clientAssertion,
  };
}

async function dpopProof(key, htu, { nonce, htm = 'POST' } = {}) {
  const { kid, ...publicJwk } = key.jwk;
  return new SignJWT({
    htm, htu, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000), ...(nonce ? { nonce } : {}),
  })
    .setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk: publicJwk })
    .sign(key.privateKey);
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

// ---------------------------------------------------------------------------
// certificates (openssl CLI)
// ---------------------------------------------------------------------------
function openssl(...args) {
  execFileSync('openssl', args, { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
}
function makeCerts() {
  const ext = path.join(tmp, 'server.ext');
  fs.writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n');
  // client CA (for tls_client_auth) + a client certificate it issued
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Selftest Client CA');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'pki-client.key', '-out', 'pki-client.csr', '-subj', '/O=Selftest/CN=pki-client');
  const cext = path.join(tmp, 'client.ext');
  fs.writeFileSync(cext, 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:pki-client.example.test\n');
  openssl('x509', '-req', '-in', 'pki-client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'pki-client.pem', '-days', '2', '-extfile', cext);
  // server certificate (self-signed, SAN IP:127.0.0.1)
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'server.key', '-out', 'server.pem', '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  // self-signed client certificate (self_signed_tls_client_auth)
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'self-client.key', '-out', 'self-client.pem', '-days', '2', '-subj', '/CN=self-signed-client');
  // a second self-signed certificate that is NOT registered
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'other-client.key', '-out', 'other-client.pem', '-days', '2', '-subj', '/CN=other-client');
  const read = (f) => fs.readFileSync(path.join(tmp, f));
  return {
    caPem: read('ca.pem'),
    serverPem: read('server.pem'),
    pki: { cert: read('pki-client.pem'), key: read('pki-client.key') },
    self: { cert: read('self-client.pem'), key: read('self-client.key') },
    other: { cert: read('other-client.pem'), key: read('other-client.key') },
    files: { ca: path.join(tmp, 'ca.pem'), cert: path.join(tmp, 'server.pem'), key: path.join(tmp, 'server.key') },
  };
}
function certThumbprint(pem) {
  return crypto.hash('sha256', new crypto.X509Certificate(pem).raw, 'base64url');
}

// ---------------------------------------------------------------------------
// the checks
// ---------------------------------------------------------------------------
const SECRET = (name) => `${name}-secret-${crypto.randomBytes(24).toString('hex')}`;

async function runHttpChecks() {
  const keys = {
    ES256: await keyPair('ES256'),
    EdDSA: await keyPair('EdDSA'),
    PS256: await keyPair('PS256'),
    RS256: await keyPair('RS256'),
  };
  const dpopKeys = {
    ES256: await keyPair('ES256'),
    EdDSA: await keyPair('EdDSA'),
    PS256: await keyPair('PS256'),
  };
  const secrets = { sjwt: SECRET('sjwt'), basic: SECRET('basic'), post: SECRET('post') };
  const clients = [
    ...Object.entries(keys).map(([alg, k]) => ({
      client_id: `pk-${alg.toLowerCase()}`,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: alg,
      jwks: { keys: [k.jwk] },
      scope: 'api:read api:write',
    })),
    {
      client_id: 'sjwt',
      client_secret: secrets.sjwt,
      token_endpoint_auth_method: 'client_secret_jwt',
      token_endpoint_auth_signing_alg: 'HS256',
      scope: 'api:read api:write',
    },
    { client_id: 'basic', client_secret: secrets.basic, token_endpoint_auth_method: 'client_secret_basic', scope: 'api:read api:write' },
    { client_id: 'post', client_secret: secrets.post, token_endpoint_auth_method: 'client_secret_post', scope: 'api:read api:write' },
    {
      client_id: 'dpop',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [keys.ES256.jwk] },
      dpop_bound_access_tokens: true,
      scope: 'api:read api:write',
    },
  ];
  const srv = await startServer(clients);
  const { issuer, tokenUrl, introspectionUrl } = srv;
  const hs = { alg: 'HS256', privateKey: new TextEncoder().encode(secrets.sjwt) };
  console.log(`# plain HTTP server ${issuer} (default resource ${'https://api.example.test'}, DPOP_NONCE=off)`);

  try {
    // (a) private_key_jwt for each algorithm
    for (const [alg, key] of Object.entries(keys)) {
      await check(`(a) private_key_jwt ${alg} gets a token`, async () => {
        const id = `pk-${alg.toLowerCase()}`;
        const res = await request(tokenUrl, { form: jwtForm(await assertion(id, key, issuer)) });
        const tok = expectToken(res);
        assert(tok.token_type === 'Bearer', `token_type ${tok.token_type}`);
        const payload = decodeJwt(tok.access_token);
        assert(payload.aud === 'https://api.example.test', `aud ${payload.aud}`);
        assert(payload.client_id === id, `client_id ${payload.client_id}`);
        assert(decodeProtectedHeader(tok.access_token).alg === 'ES256', 'access token not ES256');
      });
    }

    // (b) client_secret_jwt
    await check('(b) client_secret_jwt HS256 gets a token', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('sjwt', hs, issuer)) });
      expectToken(res);
    });

    // (c) client_secret_basic / client_secret_post
    await check('(c) client_secret_basic gets a token', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', scope: 'api:read api:write' },
        headers: { authorization: basic('basic', secrets.basic) },
      });
      const tok = expectToken(res);
      assert(tok.scope === 'api:read api:write', `scope ${tok.scope}`);
    });
    await check('(c) client_secret_post gets a token', async () => {
      const res = await request(tokenUrl, {
        form: {
          grant_type: 'client_credentials', client_id: 'post', client_secret: secrets.post, scope: 'api:write',
        },
      });
      const tok = expectToken(res);
      assert(tok.scope === 'api:write', `scope ${tok.scope}`);
    });
    await check('(c) client_secret_basic with a wrong secret -> 401 invalid_client', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials' },
        headers: { authorization: basic('basic', 'nope') },
      });
      expectError(res, 401, 'invalid_client');
      assert(/^Basic /.test(res.headers['www-authenticate'] || ''), `www-authenticate ${res.headers['www-authenticate']}`);
    });
    // Quirk: oidc-provider treats client_secret_basic and client_secret_post as
    // interchangeable, whichever of the two the client registered.
    await check('(c) quirk: client_secret_basic client may also use client_secret_post', async () => {
      expectToken(await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'basic', client_secret: secrets.basic },
      }));
    });
    await check('(c) quirk: client_secret_post client may also use client_secret_basic', async () => {
      expectToken(await request(tokenUrl, {
        form: { grant_type: 'client_credentials' },
        headers: { authorization: basic('post', secrets.post) },
      }));
    });
    await check('(c) secret client presenting a client_assertion -> 401 invalid_client', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('basic', { alg: 'HS256', privateKey: new TextEncoder().encode(secrets.basic) }, issuer)) });
      expectError(res, 401, 'invalid_client');
    });
    await check('(c) client_secret_basic with both header and client_secret param -> 400 invalid_request', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_secret: secrets.basic },
        headers: { authorization: basic('basic', secrets.basic) },
      });
      expectError(res, 400, 'invalid_request');
    });

    // assertion audience rules
    const es = keys.ES256;
    const audCases = [
      ['issuer identifier (string)', issuer, true],
      ['token endpoint URL (string)', tokenUrl, true],
      ['[issuer] (array)', [issuer], true],
      ['[other, token endpoint] (array)', ['https://other.example', tokenUrl], true],
      ['issuer with trailing slash', `${issuer}/`, false],
      ['introspection endpoint URL at the token endpoint', introspectionUrl, false],
      ['unrelated URL', 'https://other.example', false],
      ['localhost instead of 127.0.0.1', issuer.replace('127.0.0.1', 'localhost'), false],
    ];
    for (const [label, aud, ok] of audCases) {
      await check(`aud = ${label} -> ${ok ? 'accepted' : 'rejected'}`, async () => {
        const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, aud)) });
        if (ok) expectToken(res); else expectError(res, 401, 'invalid_client');
      });
    }
    await check('aud = introspection endpoint URL at the introspection endpoint -> accepted', async () => {
      const tok = expectToken(await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'post', client_secret: secrets.post },
      }));
      const res = await request(introspectionUrl, {
        form: {
          token: tok.access_token,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await assertion('pk-es256', es, introspectionUrl),
        },
      });
      // the JWT access token itself is not introspectable (400 unsupported_token_type), but
      // the client authenticated fine (otherwise it would be 401 invalid_client)
      assert(res.status !== 401, `client auth failed: ${JSON.stringify(res.body)}`);
    });

    // assertion header / claim quirks
    await check('typ: client-authentication+jwt header accepted', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { typ: 'client-authentication+jwt' })) });
      expectToken(res);
    });
    await check('typ: JWT header accepted', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { typ: 'JWT' })) });
      expectToken(res);
    });
    await check('assertion without iat accepted', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { omit: ['iat'] })) });
      expectToken(res);
    });
    for (const claim of ['sub', 'exp', 'jti']) {
      await check(`assertion without ${claim} -> rejected`, async () => {
        const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { omit: [claim] })) });
        expectError(res, 401, 'invalid_client');
      });
    }
    await check('assertion with iss != client_id -> rejected', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { extra: { iss: 'someone-else' } })) });
      expectError(res, 401, 'invalid_client');
    });
    await check('assertion with nbf in the future -> rejected', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { extra: { nbf: Math.floor(Date.now() / 1000) + 120 } })) });
      expectError(res, 401, 'invalid_client');
    });
    await check('expired assertion -> rejected', async () => {
      const now = Math.floor(Date.now() / 1000);
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { extra: { iat: now - 120, exp: now - 60 } })) });
      expectError(res, 401, 'invalid_client');
    });
    await check('assertion signed with alg other than registered token_endpoint_auth_signing_alg -> rejected', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', keys.PS256, issuer)) });
      expectError(res, 401, 'invalid_client');
    });
    await check('client_id form parameter alongside the assertion accepted when equal', async () => {
      const form = { ...jwtForm(await assertion('pk-es256', es, issuer)), client_id: 'pk-es256' };
      expectToken(await request(tokenUrl, { form }));
    });

    // (f) jti replay
    await check('(f) reused client assertion (same jti) is rejected', async () => {
      const a = await assertion('pk-es256', es, issuer);
      expectToken(await request(tokenUrl, { form: jwtForm(a) }), 'first use');
      const res = await request(tokenUrl, { form: jwtForm(a) });
      expectError(res, 401, 'invalid_client');
    });
    await check('(f) new assertion re-using an old jti is rejected', async () => {
      const jti = crypto.randomUUID();
      expectToken(await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, issuer, { jti })) }), 'first use');
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-es256', es, tokenUrl, { jti })) });
      expectError(res, 401, 'invalid_client');
    });
    await check('(f) client_secret_jwt assertion replay is rejected', async () => {
      const a = await assertion('sjwt', hs, issuer);
      expectToken(await request(tokenUrl, { form: jwtForm(a) }), 'first use');
      expectError(await request(tokenUrl, { form: jwtForm(a) }), 401, 'invalid_client');
    });

    // (d) DPoP
    for (const [alg, dkey] of Object.entries(dpopKeys)) {
      await check(`(d) DPoP (${alg} proof): token_type DPoP, JWT cnf.jkt = RFC 7638 thumbprint`, async () => {
        const res = await request(tokenUrl, {
          form: jwtForm(await assertion('dpop', es, issuer)),
          headers: { DPoP: await dpopProof(dkey, tokenUrl) },
        });
        const tok = expectToken(res);
        assert(tok.token_type === 'DPoP', `token_type ${tok.token_type}`);
        const jkt = await calculateJwkThumbprint(dkey.jwk, 'sha256');
        const payload = decodeJwt(tok.access_token);
        assert(payload.cnf?.jkt === jkt, `cnf ${JSON.stringify(payload.cnf)} != ${jkt}`);
        assert(res.headers['dpop-nonce'] === undefined, 'unexpected DPoP-Nonce header with DPOP_NONCE=off');
      });
    }
    await check('(d) DPoP opaque token (resource=https://opaque.example.test): introspection cnf.jkt', async () => {
      const dkey = dpopKeys.ES256;
      const res = await request(tokenUrl, {
        form: { ...jwtForm(await assertion('dpop', es, issuer), 'api:read'), resource: 'https://opaque.example.test' },
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      const tok = expectToken(res);
      assert(tok.token_type === 'DPoP', `token_type ${tok.token_type}`);
      assert(!tok.access_token.includes('.'), 'expected an opaque token');
      const intro = await request(introspectionUrl, {
        form: { token: tok.access_token },
        headers: { authorization: basic('basic', secrets.basic) },
      });
      assert(intro.status === 200 && intro.body.active === true, `introspection ${JSON.stringify(intro.body)}`);
      const jkt = await calculateJwkThumbprint(dkey.jwk, 'sha256');
      assert(intro.body.cnf?.jkt === jkt, `cnf ${JSON.stringify(intro.body.cnf)}`);
      assert(intro.body.token_type === 'DPoP', `token_type ${intro.body.token_type}`);
      assert(intro.body.aud === 'https://opaque.example.test', `aud ${intro.body.aud}`);
    });
    await check('(d) DPoP proof for a non-DPoP client also binds the token (cnf.jkt)', async () => {
      const dkey = dpopKeys.ES256;
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'post', client_secret: secrets.post },
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      const tok = expectToken(res);
      assert(tok.token_type === 'DPoP', `token_type ${tok.token_type}`);
      assert(decodeJwt(tok.access_token).cnf?.jkt === await calculateJwkThumbprint(dkey.jwk), 'cnf.jkt');
    });
    await check('(d) dpop_bound_access_tokens client without a proof -> 400 invalid_grant', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('dpop', es, issuer)) });
      expectError(res, 400, 'invalid_grant');
    });
    await check('(d) DPoP proof with wrong htu -> 400 invalid_dpop_proof', async () => {
      const res = await request(tokenUrl, {
        form: jwtForm(await assertion('dpop', es, issuer)),
        headers: { DPoP: await dpopProof(dpopKeys.ES256, `${issuer}/other`) },
      });
      expectError(res, 400, 'invalid_dpop_proof');
    });
    await check('(d) replayed DPoP proof -> 400 invalid_grant', async () => {
      const proof = await dpopProof(dpopKeys.ES256, tokenUrl);
      expectToken(await request(tokenUrl, { form: jwtForm(await assertion('dpop', es, issuer)), headers: { DPoP: proof } }), 'first use');
      const res = await request(tokenUrl, { form: jwtForm(await assertion('dpop', es, issuer)), headers: { DPoP: proof } });
      expectError(res, 400, 'invalid_grant');
    });
    await check('(d) DPOP_NONCE=off: a proof carrying a nonce -> 400 invalid_dpop_proof', async () => {
      const res = await request(tokenUrl, {
        form: jwtForm(await assertion('dpop', es, issuer)),
        headers: { DPoP: await dpopProof(dpopKeys.ES256, tokenUrl, { nonce: 'abc' }) },
      });
      expectError(res, 400, 'invalid_dpop_proof');
    });
    await check('nothing but the READY line on stdout', async () => {
      assert(srv.extraStdout() === '', `extra stdout: ${JSON.stringify(srv.extraStdout())}`);
    });
  } finally {
    const code = await srv.stop();
    await check('server exits 0 when its stdin is closed', async () => { assert(code === 0, `exit code ${code}`); });
  }
}

async function runNonceChecks() {
  const es = await keyPair('ES256');
  const dkey = await keyPair('ES256');
  const clients = [{
    client_id: 'dpop',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [es.jwk] },
    dpop_bound_access_tokens: true,
  }];
  const srv = await startServer(clients, { DPOP_NONCE: 'required' });
  const { issuer, tokenUrl } = srv;
  console.log(`# plain HTTP server ${issuer} (DPOP_NONCE=required)`);
  try {
    let nonce;
    await check('(e) DPOP_NONCE=required: first request -> 400 use_dpop_nonce + DPoP-Nonce header', async () => {
      const res = await request(tokenUrl, {
        form: jwtForm(await assertion('dpop', es, issuer)),
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      expectError(res, 400, 'use_dpop_nonce');
      nonce = res.headers['dpop-nonce'];
      assert(typeof nonce === 'string' && nonce.length > 0, 'no DPoP-Nonce header');
      assert(res.headers['www-authenticate'] === undefined, `unexpected WWW-Authenticate ${res.headers['www-authenticate']}`);
      console.log(`     response: ${res.status} ${JSON.stringify(res.body)} DPoP-Nonce: ${nonce} cache-control: ${res.headers['cache-control']}`);
    });
    await check('(e) retry with the nonce (fresh assertion + fresh proof) succeeds', async () => {
      const res = await request(tokenUrl, {
        form: jwtForm(await assertion('dpop', es, issuer)),
        headers: { DPoP: await dpopProof(dkey, tokenUrl, { nonce }) },
      });
      const tok = expectToken(res);
      assert(tok.token_type === 'DPoP', `token_type ${tok.token_type}`);
      assert(decodeJwt(tok.access_token).cnf?.jkt === await calculateJwkThumbprint(dkey.jwk), 'cnf.jkt');
    });
    await check('(e) quirk: retrying with the SAME client assertion after use_dpop_nonce -> 401 (jti already consumed)', async () => {
      // Client authentication (which records the assertion jti) runs before the
      // grant handler validates the DPoP proof, so the 400 use_dpop_nonce
      // answer has already burnt the assertion: a retry must sign a new one.
      const a = await assertion('dpop', es, issuer);
      const first = await request(tokenUrl, { form: jwtForm(a), headers: { DPoP: await dpopProof(dkey, tokenUrl) } });
      expectError(first, 400, 'use_dpop_nonce');
      const retry = await request(tokenUrl, {
        form: jwtForm(a), headers: { DPoP: await dpopProof(dkey, tokenUrl, { nonce: first.headers['dpop-nonce'] }) },
      });
      console.log(`     retry with the same assertion: ${retry.status} ${JSON.stringify(retry.status === 200 ? { token_type: retry.body.token_type } : retry.body)}`);
      expectError(retry, 401, 'invalid_client');
    });
    await check('(e) invalid nonce -> 400 use_dpop_nonce + fresh DPoP-Nonce', async () => {
      const res = await request(tokenUrl, {
        form: jwtForm(await assertion('dpop', es, issuer)),
        headers: { DPoP: await dpopProof(dkey, tokenUrl, { nonce: 'bogus' }) },
      });
      expectError(res, 400, 'use_dpop_nonce');
      assert(res.headers['dpop-nonce'], 'no DPoP-Nonce header');
    });
  } finally {
    await srv.stop();
  }
}

async function runOptionalNonceAndOpaqueChecks() {
  const dkey = await keyPair('ES256');
  const secret = SECRET('x');
  const clients = [
    { client_id: 'strict', client_secret: secret, token_endpoint_auth_method: 'client_secret_post' },
    { client_id: 'relaxed', client_secret: secret, token_endpoint_auth_method: 'client_secret_post', scope: 'api:read' },
  ];
  const srv = await startServer(clients, { DPOP_NONCE: 'optional', DPOP_NONCE_CLIENTS: 'strict', DEFAULT_RESOURCE: 'none' });
  const { tokenUrl, introspectionUrl, issuer } = srv;
  console.log(`# plain HTTP server ${issuer} (DPOP_NONCE=optional DPOP_NONCE_CLIENTS=strict DEFAULT_RESOURCE=none)`);
  try {
    await check('DPOP_NONCE_CLIENTS: listed client must use a nonce', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'strict', client_secret: secret },
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      expectError(res, 400, 'use_dpop_nonce');
    });
    await check('DPOP_NONCE=optional: other client succeeds without nonce and is handed a DPoP-Nonce', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'relaxed', client_secret: secret },
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      expectToken(res);
      assert(res.headers['dpop-nonce'], 'no DPoP-Nonce header on success');
    });
    await check('DEFAULT_RESOURCE=none: opaque token, scope kept, introspectable with cnf.jkt', async () => {
      const res = await request(tokenUrl, {
        form: {
          grant_type: 'client_credentials', client_id: 'relaxed', client_secret: secret, scope: 'api:read',
        },
        headers: { DPoP: await dpopProof(dkey, tokenUrl) },
      });
      const tok = expectToken(res);
      assert(!tok.access_token.includes('.'), 'expected an opaque token');
      assert(tok.scope === 'api:read', `scope ${tok.scope}`);
      const intro = await request(introspectionUrl, {
        form: {
          token: tok.access_token, client_id: 'relaxed', client_secret: secret,
        },
      });
      assert(intro.body.active === true, JSON.stringify(intro.body));
      assert(intro.body.cnf?.jkt === await calculateJwkThumbprint(dkey.jwk), JSON.stringify(intro.body));
    });
    await check('DEFAULT_RESOURCE=none: scope outside the client\'s registered scope -> 400 invalid_scope', async () => {
      const res = await request(tokenUrl, {
        form: {
          grant_type: 'client_credentials', client_id: 'relaxed', client_secret: secret, scope: 'api:write',
        },
      });
      expectError(res, 400, 'invalid_scope');
    });
  } finally {
    await srv.stop();
  }
}

async function runMtlsChecks() {
  const certs = makeCerts();
  const selfCertB64 = new crypto.X509Certificate(certs.self.cert).raw.toString('base64');
  const selfJwk = {
    ...crypto.createPublicKey(certs.self.cert).export({ format: 'jwk' }),
    x5c: [selfCertB64],
  };
  const es = await keyPair('ES256');
  const clients = [
    {
      client_id: 'mtls-self',
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      jwks: { keys: [selfJwk] },
      tls_client_certificate_bound_access_tokens: true,
      scope: 'api:read api:write',
    },
    {
      client_id: 'mtls-pki',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: 'CN=pki-client,O=Selftest',
      tls_client_certificate_bound_access_tokens: true,
    },
    {
      client_id: 'mtls-pki-san',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_san_dns: 'pki-client.example.test',
    },
    {
      client_id: 'pk-bound',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [es.jwk] },
      tls_client_certificate_bound_access_tokens: true,
    },
  ];
  const srv = await startServer(clients, {
    TLS_CERT: certs.files.cert, TLS_KEY: certs.files.key, TLS_CA: certs.files.ca, DEFAULT_RESOURCE: 'none',
  });
  const { issuer, tokenUrl, introspectionUrl } = srv;
  console.log(`# HTTPS server ${issuer} (TLS_CA set, DEFAULT_RESOURCE=none)`);
  const tlsWith = (c) => ({ tls: { ca: certs.serverPem, ...(c ? { cert: c.cert, key: c.key } : {}) } });
  try {
    await check('HTTPS issuer is https://127.0.0.1:<port> and discovery works', async () => {
      assert(issuer.startsWith('https://127.0.0.1:'), issuer);
      const res = await request(`${issuer}/.well-known/openid-configuration`, { method: 'GET', ...tlsWith() });
      assert(res.status === 200 && res.body.issuer === issuer, JSON.stringify(res.body).slice(0, 200));
      assert(res.body.tls_client_certificate_bound_access_tokens === true, 'tls_client_certificate_bound_access_tokens');
    });
    let selfToken;
    await check('(g) self_signed_tls_client_auth: token with cnf["x5t#S256"] (introspection)', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'mtls-self', scope: 'api:read' }, ...tlsWith(certs.self),
      });
      const tok = expectToken(res);
      selfToken = tok.access_token;
      assert(tok.token_type === 'Bearer', `token_type ${tok.token_type}`);
      const intro = await request(introspectionUrl, { form: { token: tok.access_token, client_id: 'mtls-self' }, ...tlsWith(certs.self) });
      assert(intro.body.active === true, JSON.stringify(intro.body));
      const expected = certThumbprint(certs.self.cert);
      assert(intro.body.cnf?.['x5t#S256'] === expected, `cnf ${JSON.stringify(intro.body.cnf)} != ${expected}`);
    });
    await check('(g) self_signed_tls_client_auth with resource=https://api.example.test: JWT cnf["x5t#S256"]', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'mtls-self', resource: 'https://api.example.test' }, ...tlsWith(certs.self),
      });
      const tok = expectToken(res);
      const payload = decodeJwt(tok.access_token);
      assert(payload.cnf?.['x5t#S256'] === certThumbprint(certs.self.cert), JSON.stringify(payload));
    });
    await check('(g) self_signed_tls_client_auth with an unregistered certificate -> 401 invalid_client', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'mtls-self' }, ...tlsWith(certs.other),
      });
      expectError(res, 401, 'invalid_client');
    });
    await check('(g) self_signed_tls_client_auth without a certificate -> 401 invalid_client', async () => {
      const res = await request(tokenUrl, { form: { grant_type: 'client_credentials', client_id: 'mtls-self' }, ...tlsWith() });
      expectError(res, 401, 'invalid_client');
    });
    await check('tls_client_auth (CA-issued cert, subject DN given in RFC 4514 order) gets a bound token', async () => {
      const res = await request(tokenUrl, {
        form: { grant_type: 'client_credentials', client_id: 'mtls-pki' }, ...tlsWith(certs.pki),
      });
      const tok = expectToken(res);
      const intro = await request(introspectionUrl, { form: { token: tok.access_token, client_id: 'mtls-pki' }, ...tlsWith(certs.pki) });
      assert(intro.body.cnf?.['x5t#S256'] === certThumbprint(certs.pki.cert), JSON.stringify(intro.body));
    });
    await check('tls_client_auth by SAN DNS gets a token', async () => {
      expectToken(await request(tokenUrl, { form: { grant_type: 'client_credentials', client_id: 'mtls-pki-san' }, ...tlsWith(certs.pki) }));
    });
    await check('tls_client_auth with a self-signed (not CA-issued) cert -> 401 invalid_client', async () => {
      const res = await request(tokenUrl, { form: { grant_type: 'client_credentials', client_id: 'mtls-pki' }, ...tlsWith(certs.self) });
      expectError(res, 401, 'invalid_client');
    });
    await check('private_key_jwt + tls_client_certificate_bound_access_tokens over HTTPS: cnf["x5t#S256"]', async () => {
      const res = await request(tokenUrl, {
        form: { ...jwtForm(await assertion('pk-bound', es, issuer)), resource: 'https://api.example.test' }, ...tlsWith(certs.self),
      });
      const tok = expectToken(res);
      assert(decodeJwt(tok.access_token).cnf?.['x5t#S256'] === certThumbprint(certs.self.cert), 'cnf');
    });
    await check('private_key_jwt + certificate-bound client without a TLS client cert -> 400 invalid_grant', async () => {
      const res = await request(tokenUrl, { form: jwtForm(await assertion('pk-bound', es, issuer)), ...tlsWith() });
      expectError(res, 400, 'invalid_grant');
    });
    await check('(g) self-signed mTLS token is opaque and active', async () => {
      assert(selfToken && !selfToken.includes('.'), 'expected opaque token');
    });
  } finally {
    await srv.stop();
  }
}

async function runStartupChecks() {
  await check('invalid client metadata: server exits non-zero without READY', async () => {
    let err;
    try {
      const srv = await startServer([{ client_id: 'x', token_endpoint_auth_method: 'private_key_jwt' }]);
      await srv.stop();
    } catch (e) { err = e; }
    assert(err && /exited with 1/.test(err.message), `expected startup failure, got ${err?.message}`);
  });
}

try {
  await runHttpChecks();
  await runNonceChecks();
  await runOptionalNonceAndOpaqueChecks();
  await runMtlsChecks();
  await runStartupChecks();
} catch (err) {
  failed += 1;
  console.log(`FAIL harness: ${err.stack || err}`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
