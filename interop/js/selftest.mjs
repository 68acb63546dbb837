// js <-> js self test of peer.mjs: `npm test --prefix interop/js`
// (or `node --test interop/js/selftest.mjs`). Proves the peer itself works
// before it is used to judge the Python implementation.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { test } from 'node:test'

const PEER = new URL('./peer.mjs', import.meta.url).pathname

function start (...args) {
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  const events = []
  const waiters = []
  createInterface({ input: child.stdout }).on('line', (line) => {
    const ev = JSON.parse(line)
    events.push(ev)
    for (const w of [...waiters]) {
      if (w.pred(ev)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(ev) }
    }
  })
  const exited = new Promise(resolve => child.on('exit', (code) => resolve(code)))
  return {
    child,
    events,
    exited,
    next (pred, ms = 15000) {
      const seen = events.find(pred)
      if (seen != null) { events.splice(events.indexOf(seen), 1); return Promise.resolve(seen) }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('timed out waiting for event')), ms)
        waiters.push({ pred: (ev) => { const ok = pred(ev); if (ok) { clearTimeout(t); events.splice(events.indexOf(ev), 1) } return ok }, resolve })
      })
    },
    send (line) { child.stdin.write(line + '\n') }
  }
}

const is = (name) => (ev) => ev.event === name

test('dial mode against a js listener', async () => {
  const l = start('listen')
  try {
    const listening = await l.next(is('listening'))
    assert.match(listening.peer_id, /^12D3KooW/)
    assert.equal(listening.addrs.length, 1)
    assert.ok(listening.addrs[0].startsWith('/ip4/127.0.0.1/tcp/'))

    const d = start('dial', listening.addrs[0])
    const code = await d.exited
    const names = d.events.map(e => e.event)
    assert.equal(code, 0, JSON.stringify(d.events))
    assert.equal(names.at(-1), 'done')
    assert.equal(d.events.at(-1).ok, true)
    assert.equal(d.events.filter(e => e.event === 'ping' && e.ok).length, 3)
    const id = d.events.find(is('identified'))
    assert.equal(id.peer_id, listening.peer_id)
    assert.ok(id.protocols.includes('/kos/interop-echo/1.0.0'))
    assert.ok(id.protocols.includes('/ipfs/ping/1.0.0'))
    assert.deepEqual(d.events.filter(is('echo_result')).map(e => e.bytes), [65536, 37])

    // the listener saw the dialer identify itself and served two echo streams
    const seen = await l.next(is('identified'))
    assert.match(seen.agent_version, /js-libp2p/)
    assert.equal((await l.next(is('echo'))).bytes, 65536)
    assert.equal((await l.next(is('echo'))).bytes, 37)
  } finally {
    l.send('quit')
    assert.equal(await l.exited, 0)
  }
})

test('stdin commands against a second js listener', async () => {
  const a = start('listen')
  const b = start('listen', '--no-stdin', '--seed', '11'.repeat(32))
  try {
    await a.next(is('listening'))
    const lb = await b.next(is('listening'))
    assert.equal(lb.peer_id, '12D3KooWPqT2nMDSiXUSx5D7fasaxhxKigVhcqfkKqrLghCq9jxz')

    a.send(`ping ${lb.addrs[0]}`)
    const p = await a.next(is('ping'))
    assert.equal(p.ok, true)
    assert.equal(typeof p.rtt_ms, 'number')

    a.send(`ping ${lb.peer_id}`)
    assert.equal((await a.next(is('ping'))).ok, true)

    const payload = randomBytes(70000).toString('hex')
    a.send(`echo ${lb.addrs[0]} ${payload}`)
    const e = await a.next(is('echo_result'))
    assert.equal(e.ok, true)
    assert.equal(e.data_hex, payload)

    a.send(`echo ${lb.addrs[0]}`)
    const empty = await a.next(is('echo_result'))
    assert.equal(empty.ok, true)
    assert.equal(empty.data_hex, '')

    a.send('ping /ip4/127.0.0.1/tcp/1/p2p/12D3KooWLy3Chb2x5C5F51cWE65bbFouUTfVgkocEkdFp7CiFQtd')
    assert.equal((await a.next(is('ping'))).ok, false)

    a.send('bogus')
    assert.equal((await a.next(is('error'))).event, 'error')
  } finally {
    a.child.stdin.end() // EOF => clean shutdown
    b.child.kill('SIGTERM')
    assert.equal(await a.exited, 0)
    assert.equal(await b.exited, 0)
  }
})

test('dial mode rejects a peer id mismatch', async () => {
  const l = start('listen', '--no-stdin')
  try {
    const listening = await l.next(is('listening'))
    const wrong = listening.addrs[0].replace(/\/p2p\/.*$/, '/p2p/12D3KooWLy3Chb2x5C5F51cWE65bbFouUTfVgkocEkdFp7CiFQtd')
    const d = start('dial', wrong)
    assert.equal(await d.exited, 1)
    assert.equal(d.events.at(-1).event, 'done')
    assert.equal(d.events.at(-1).ok, false)
    assert.match(d.events.at(-1).error, /peer id mismatch/)
  } finally {
    l.child.kill('SIGTERM')
    await l.exited
  }
})
