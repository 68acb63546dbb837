// Node 20 lacks Promise.withResolvers (added in Node 22), which js-libp2p 2.x
// dependencies (it-queue, mortice, ...) call at run time. This module must be
// imported before anything from libp2p: peer.mjs imports it first, and ES
// module imports are evaluated in order.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}
