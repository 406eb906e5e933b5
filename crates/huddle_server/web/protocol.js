// The Huddle protocol over one WebSocket (docs/protocol.md): requests answered in order by
// `re`, events pushed as they happen, a `ping` every 15 s (browsers send no WebSocket pings,
// and the server closes a connection silent for 60 s).

export class ProtocolError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.nextId = 1;
    this.waiting = new Map();
    this.socket = null;
    this.pinger = null;
  }

  /** Opens the socket; resolves once it is open. */
  open() {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(this.url);
      this.socket = socket;
      socket.onopen = () => {
        this.pinger = setInterval(() => this.send({ type: 'ping' }), 15000);
        resolve();
      };
      socket.onerror = () => reject(new ProtocolError('UNKNOWN_API_ERROR', 'cannot reach the server'));
      socket.onclose = (event) => {
        clearInterval(this.pinger);
        for (const { reject: fail } of this.waiting.values()) {
          fail(new ProtocolError('UNKNOWN_API_ERROR', 'connection closed'));
        }
        this.waiting.clear();
        this.dispatchEvent(new CustomEvent('closed', { detail: { code: event.code } }));
      };
      socket.onmessage = (message) => this.receive(message.data);
    });
  }

  close() {
    if (this.socket) this.socket.close(1000);
  }

  send(fields) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ v: 1, ...fields }));
    }
  }

  /** Sends a request; resolves with its answer, rejects with a ProtocolError. */
  request(type, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.send({ id, type, ...fields });
    });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.re !== undefined) {
      const waiter = this.waiting.get(frame.re);
      if (!waiter) return;
      this.waiting.delete(frame.re);
      if (frame.type === 'error') {
        waiter.reject(new ProtocolError(frame.error.code, frame.error.message));
      } else {
        waiter.resolve(frame);
      }
      return;
    }
    if (frame.type === 'pong') return;
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
  }
}

/** The WebSocket URL of the server that served this page. */
export function serverUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}
