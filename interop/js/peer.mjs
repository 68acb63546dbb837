#!/usr/bin/env node
// kosmesh interop peer: a js-libp2p 2.x node (TCP + Noise + yamux, identify and
// ping) driven by the Python test suite. Machine-readable results go to stdout
// as one JSON object per line; human logs go to stderr. See README.md.

import './polyfill.mjs' // must stay the first import (Promise.withResolvers on Node 20)

import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { isMultiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { version as LIBP2P_VERSION } from 'libp2p/version'

const SELF_VERSION = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')).version

export const ECHO_PROTOCOL = '/kos/interop-echo/1.0.0'
const BIG_PAYLOAD_LEN = 64 * 1024
const WRITE_CHUNK = 8 * 1024
const SMALL_PAYLOAD = new TextEncoder().encode('kosmesh interop: hello from js-libp2p')

// ---------------------------------------------------------------- output ----

let muted = false // set once dial mode has printed its final "done" line

function emit (obj) {
  if (muted) return
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function log (...args) {
  process.stderr.write(`[js-peer ${process.pid}] ${args.join(' ')}\n`)
}

function errMsg (err) {
  if (err == null) return 'unknown error'
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : ''
  return `${name}${err.message ?? String(err)}`
}

async function flushStdout () {
  await new Promise(resolve => process.stdout.write('', () => resolve()))
}

process.on('unhandledRejection', (err) => { log('unhandled rejection:', err?.stack ?? String(err)) })
process.on('uncaughtException', (err) => { log('uncaught exception:', err?.stack ?? String(err)) })

// ----------------------------------------------------------------- args -----

function usage () {
  process.stderr.write(`usage:
  node peer.mjs listen [--port N] [--host IP] [options]
  node peer.mjs dial <multiaddr> [--timeout MS] [options]
options:
  --seed HEX      32-byte hex seed for a deterministic Ed25519 identity
  --agent STR     identify agent version to advertise
  --monitor       enable js-libp2p's connection monitor (periodic pings; off by default)
  --no-stdin      (listen) do not read commands from stdin; run until SIGTERM/SIGINT
  --cmd-timeout MS  (listen) timeout for each stdin command (default 10000)
`)
}

function parseArgs (argv) {
  const opts = {
    mode: undefined,
    target: undefined,
    port: 0,
    host: '127.0.0.1',
    seed: undefined,
    agent: undefined,
    monitor: false,
    stdin: true,
    timeout: 20000,
    cmdTimeout: 10000
  }
  const rest = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`)
      return argv[++i]
    }
    switch (a) {
      case '--port': opts.port = Number.parseInt(next(), 10); break
      case '--host': opts.host = next(); break
      case '--seed': opts.seed = next(); break
      case '--agent': opts.agent = next(); break
      case '--monitor': opts.monitor = true; break
      case '--no-stdin': opts.stdin = false; break
      case '--timeout': opts.timeout = Number.parseInt(next(), 10); break
      case '--cmd-timeout': opts.cmdTimeout = Number.parseInt(next(), 10); break
      case '-h': case '--help': usage(); process.exit(0); break
      default:
        if (a.startsWith('--')) throw new Error(`unknown option ${a}`)
        rest.push(a)
    }
  }
  opts.mode = rest[0]
  opts.target = rest[1]
  if (opts.mode !== 'listen' && opts.mode !== 'dial') throw new Error(`unknown mode ${opts.mode ?? '(none)'}`)
  if (opts.mode === 'dial' && opts.target == null) throw new Error('dial needs a multiaddr')
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('bad --port')
  if (!Number.isInteger(opts.timeout) || opts.timeout <= 0) throw new Error('bad --timeout')
  if (!Number.isInteger(opts.cmdTimeout) || opts.cmdTimeout <= 0) throw new Error('bad --cmd-timeout')
  return opts
}

// ------------------------------------------------------------ helpers -------

function toHex (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function fromHex (hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error('payload is not valid hex')
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

function concat (chunks, total) {
  const out = new Uint8Array(total)
  let off = 0
  for (const c of chunks) { out.set(c, off); off += c.byteLength }
  return out
}

/** The deterministic 64 KiB payload used by `dial` mode: byte i = i % 251. */
export function bigPayload (len = BIG_PAYLOAD_LEN) {
  const p = new Uint8Array(len)
  for (let i = 0; i < len; i++) p[i] = i % 251
  return p
}

/** "/ip4/.../p2p/12D3..." -> Multiaddr; "12D3..." -> PeerId */
function parseTarget (s) {
  if (s == null || s === '') throw new Error('missing target')
  if (s.startsWith('/')) return multiaddr(s)
  return peerIdFromString(s)
}

// Resolve a command target to a PeerId, dialing it first when it is a
// multiaddr. js-libp2p 2.x does not check the /p2p/ component of a dialed
// multiaddr against the identity proven in the Noise handshake, so we do:
// a mismatch closes the connection and fails the command.
async function connectTarget (node, s, signal) {
  const target = parseTarget(s)
  if (!isMultiaddr(target)) return { peer: target, conn: undefined }
  const conn = await node.dial(target, { signal })
  const expected = target.getPeerId()
  if (expected != null && conn.remotePeer.toString() !== expected) {
    const err = new Error(`peer id mismatch: dialed ${expected} but the remote proved ${conn.remotePeer.toString()}`)
    err.name = 'PeerIdMismatchError'
    conn.abort(err)
    throw err
  }
  return { peer: conn.remotePeer, conn }
}

function identifyEvent (r) {
  return {
    event: 'identified',
    peer_id: r.peerId.toString(),
    agent_version: r.agentVersion ?? null,
    protocol_version: r.protocolVersion ?? null,
    protocols: [...(r.protocols ?? [])],
    listen_addrs: (r.listenAddrs ?? []).map(a => a.toString()),
    observed_addr: r.observedAddr != null ? r.observedAddr.toString() : null,
    signed_peer_record: r.signedPeerRecord != null
  }
}

function connEvent (name, conn) {
  return {
    event: name,
    peer_id: conn.remotePeer.toString(),
    remote_addr: conn.remoteAddr.toString(),
    direction: conn.direction,
    encryption: conn.encryption ?? null,
    multiplexer: conn.multiplexer ?? null
  }
}

// Server side of /kos/interop-echo/1.0.0: echo every byte back on the same
// stream; our write side closes once the remote has closed theirs (sink ends
// when the source ends).
function echoHandler ({ stream, connection }) {
  let n = 0
  const peer = connection.remotePeer.toString()
  stream.sink((async function * () {
    for await (const chunk of stream.source) {
      n += chunk.byteLength
      yield chunk
    }
  })()).then(() => {
    log(`echoed ${n} bytes for ${peer}`)
    emit({ event: 'echo', ok: true, bytes: n, peer_id: peer })
  }, (err) => {
    log(`echo stream from ${peer} failed after ${n} bytes: ${errMsg(err)}`)
    stream.abort(err)
    emit({ event: 'echo', ok: false, bytes: n, peer_id: peer, error: errMsg(err) })
  })
}

// Client side: open the echo protocol, write `payload` (in chunks), close our
// write side, read everything back until the remote closes theirs.
async function echoRoundTrip (node, target, payload, signal) {
  const stream = await node.dialProtocol(target, ECHO_PROTOCOL, { signal })
  const onAbort = () => stream.abort(new Error('echo timed out'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const chunks = []
    let total = 0
    await Promise.all([
      stream.sink((async function * () {
        for (let off = 0; off < payload.byteLength; off += WRITE_CHUNK) {
          yield payload.subarray(off, Math.min(off + WRITE_CHUNK, payload.byteLength))
        }
      })()),
      (async () => {
        for await (const chunk of stream.source) {
          const b = chunk.subarray()
          chunks.push(b)
          total += b.byteLength
        }
      })()
    ])
    return concat(chunks, total)
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

function firstMismatch (a, b) {
  const n = Math.min(a.byteLength, b.byteLength)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.byteLength === b.byteLength ? -1 : n
}

// ------------------------------------------------------------ the node ------

async function makeNode (opts, { listen }) {
  let privateKey
  if (opts.seed != null) {
    const seed = fromHex(opts.seed)
    if (seed.byteLength !== 32) throw new Error('--seed must be 32 bytes (64 hex chars)')
    privateKey = await generateKeyPairFromSeed('Ed25519', seed)
  } else {
    privateKey = await generateKeyPair('Ed25519')
  }
  const agent = opts.agent ??
    `kosmesh-interop-js/${SELF_VERSION} js-libp2p/${LIBP2P_VERSION} node/${process.version}`

  const node = await createLibp2p({
    privateKey,
    nodeInfo: { name: 'kosmesh-interop-js', version: SELF_VERSION, userAgent: agent },
    addresses: { listen: listen ? [`/ip4/${opts.host}/tcp/${opts.port}`] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // no peer discovery, no DHT/autonat/relay/mdns: only identify and ping.
    services: {
      identify: identify(),
      ping: ping()
    },
    // the connection monitor would send its own periodic pings on every
    // connection and abort connections whose ping fails; keep the wire to
    // exactly what the harness asks for unless --monitor is given.
    connectionMonitor: { enabled: opts.monitor }
  })

  node.addEventListener('connection:open', (evt) => {
    const ev = connEvent('connected', evt.detail)
    log(`connection open ${ev.direction} ${ev.remote_addr} ${ev.peer_id} ${ev.encryption} ${ev.multiplexer}`)
    emit(ev)
  })
  node.addEventListener('connection:close', (evt) => {
    const ev = connEvent('disconnected', evt.detail)
    log(`connection closed ${ev.remote_addr} ${ev.peer_id}`)
    emit(ev)
  })

  await node.handle(ECHO_PROTOCOL, echoHandler, {
    maxInboundStreams: 256,
    maxOutboundStreams: 256
  })
  return node
}

// --------------------------------------------------------------- listen -----

async function runListen (opts) {
  const node = await makeNode(opts, { listen: true })
  node.addEventListener('peer:identify', (evt) => {
    const ev = identifyEvent(evt.detail)
    log(`identified ${ev.peer_id} agent=${ev.agent_version}`)
    emit(ev)
  })
  await node.start()
  const addrs = node.getMultiaddrs().map(a => a.toString())
  log(`listening as ${node.peerId.toString()} on ${addrs.join(' ')}`)
  emit({ event: 'listening', peer_id: node.peerId.toString(), addrs })

  let stopping = false
  const shutdown = async (why) => {
    if (stopping) return
    stopping = true
    log(`shutting down (${why})`)
    const force = setTimeout(() => { log('stop timed out'); process.exit(0) }, 5000)
    force.unref()
    try {
      await node.stop()
    } catch (err) {
      log('error while stopping:', errMsg(err))
    }
    emit({ event: 'stopped' })
    await flushStdout()
    process.exit(0)
  }
  process.on('SIGTERM', () => { shutdown('SIGTERM') })
  process.on('SIGINT', () => { shutdown('SIGINT') })

  if (!opts.stdin) return

  // Commands run one at a time, in the order given; each has a timeout.
  let queue = Promise.resolve()
  const rl = createInterface({ input: process.stdin, terminal: false })
  rl.on('line', (line) => {
    queue = queue.then(() => runCommand(node, line.trim(), opts, shutdown))
  })
  rl.on('close', () => {
    queue = queue.then(() => shutdown('stdin closed'))
  })
}

async function runCommand (node, line, opts, shutdown) {
  if (line === '' || line.startsWith('#')) return
  const [cmd, ...args] = line.split(/\s+/)
  const signal = AbortSignal.timeout(opts.cmdTimeout)
  switch (cmd) {
    case 'ping': {
      try {
        const { peer } = await connectTarget(node, args[0], signal)
        const rtt = await node.services.ping.ping(peer, { signal })
        emit({ event: 'ping', ok: true, rtt_ms: rtt })
      } catch (err) {
        emit({ event: 'ping', ok: false, error: errMsg(err) })
      }
      return
    }
    case 'echo': {
      try {
        const payload = fromHex(args[1] ?? '')
        const { peer } = await connectTarget(node, args[0], signal)
        const data = await echoRoundTrip(node, peer, payload, signal)
        emit({ event: 'echo_result', ok: true, bytes: data.byteLength, data_hex: toHex(data) })
      } catch (err) {
        emit({ event: 'echo_result', ok: false, error: errMsg(err) })
      }
      return
    }
    case 'dial': {
      try {
        const { peer } = await connectTarget(node, args[0], signal)
        const conn = node.getConnections(peer)[0] ?? await node.dial(peer, { signal })
        emit({ event: 'dial', ok: true, peer_id: conn.remotePeer.toString(), remote_addr: conn.remoteAddr.toString() })
      } catch (err) {
        emit({ event: 'dial', ok: false, error: errMsg(err) })
      }
      return
    }
    case 'hangup': {
      try {
        await node.hangUp(parseTarget(args[0]), { signal })
        emit({ event: 'hangup', ok: true })
      } catch (err) {
        emit({ event: 'hangup', ok: false, error: errMsg(err) })
      }
      return
    }
    case 'peers': {
      emit({ event: 'peers', connections: node.getConnections().map(c => connEvent('connection', c)) })
      return
    }
    case 'quit':
    case 'exit':
      await shutdown('quit')
      return
    default:
      emit({ event: 'error', error: `unknown command: ${cmd}` })
  }
}

// ----------------------------------------------------------------- dial -----

async function runDial (opts) {
  let node
  let finished = false
  const finish = async (ok, error) => {
    if (finished) return
    finished = true
    emit(ok ? { event: 'done', ok: true } : { event: 'done', ok: false, error })
    muted = true // "done" is always the last line on stdout
    await flushStdout()
    if (node != null) {
      const t = setTimeout(() => process.exit(ok ? 0 : 1), 3000)
      t.unref()
      try { await node.stop() } catch (err) { log('error while stopping:', errMsg(err)) }
    }
    process.exit(ok ? 0 : 1)
  }
  const overall = setTimeout(() => { finish(false, `timed out after ${opts.timeout} ms`) }, opts.timeout)
  const signal = AbortSignal.timeout(opts.timeout)
  process.on('SIGTERM', () => { finish(false, 'SIGTERM') })
  process.on('SIGINT', () => { finish(false, 'SIGINT') })

  let step = 'start'
  try {
    if (!opts.target.startsWith('/')) throw new Error('dial needs a multiaddr')
    node = await makeNode(opts, { listen: true })

    // identify results, keyed by peer id, collected from before the dial
    const identified = new Map()
    const waiters = new Map()
    node.addEventListener('peer:identify', (evt) => {
      const id = evt.detail.peerId.toString()
      identified.set(id, evt.detail)
      waiters.get(id)?.(evt.detail)
    })

    await node.start()
    log(`started as ${node.peerId.toString()} on ${node.getMultiaddrs().map(String).join(' ')}`)

    step = 'dial'
    const { peer: remote, conn } = await connectTarget(node, opts.target, signal)
    const remoteId = remote.toString()
    emit({ event: 'dialed', ok: true, peer_id: remoteId, remote_addr: conn.remoteAddr.toString(), encryption: conn.encryption ?? null, multiplexer: conn.multiplexer ?? null })

    step = 'ping'
    for (let seq = 1; seq <= 3; seq++) {
      const rtt = await node.services.ping.ping(remote, { signal })
      emit({ event: 'ping', ok: true, seq, rtt_ms: rtt })
    }

    step = 'identify'
    const result = identified.get(remoteId) ?? await new Promise((resolve, reject) => {
      waiters.set(remoteId, resolve)
      signal.addEventListener('abort', () => reject(new Error('no identify from remote')), { once: true })
    })
    emit(identifyEvent(result))
    if (!result.protocols.includes(ECHO_PROTOCOL)) {
      log(`warning: remote does not list ${ECHO_PROTOCOL} in identify; trying anyway`)
    }

    for (const [name, payload] of [['64KiB', bigPayload()], ['small', SMALL_PAYLOAD]]) {
      step = `echo ${name}`
      const data = await echoRoundTrip(node, remote, payload, signal)
      const bad = firstMismatch(payload, data)
      if (bad !== -1) {
        throw new Error(`echo mismatch: sent ${payload.byteLength} bytes, got ${data.byteLength}, first difference at byte ${bad}`)
      }
      emit({ event: 'echo_result', ok: true, bytes: data.byteLength })
    }

    clearTimeout(overall)
    await finish(true)
  } catch (err) {
    clearTimeout(overall)
    log(`failed during ${step}:`, err?.stack ?? String(err))
    await finish(false, `${step}: ${errMsg(err)}`)
  }
}

// ----------------------------------------------------------------- main -----

let opts
try {
  opts = parseArgs(process.argv.slice(2))
} catch (err) {
  usage()
  emit({ event: 'error', error: errMsg(err) })
  process.exit(2)
}

if (opts.mode === 'listen') {
  runListen(opts).catch(async (err) => {
    log('listen failed:', err?.stack ?? String(err))
    emit({ event: 'error', error: errMsg(err) })
    await flushStdout()
    process.exit(1)
  })
} else {
  runDial(opts)
}
