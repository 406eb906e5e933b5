// One call's media, following docs/protocol.md: a full mesh of RTCPeerConnections, one per
// remote participant ("Writing a client"), or, when the session goes through the server's SFU
// ("Large calls through the SFU"), one connection publishing to it and one receiving
// everyone from it. In a mesh:
// - the smaller uid offers; m-lines camera (stream `huddle-video`), microphone
//   (`huddle-audio`), screen (`huddle-screen`, silent until we share);
// - trickle ICE both ways, with an end-of-candidates;
// - `video_wanted` from a remote caps or pauses our camera's sender;
// - what our tiles show is asked of each remote with `video_wanted`, on change and every 2 s.
// Through the SFU: we offer on `sfu:publish` (one layer of camera, microphone, screen) and
// answer every offer of `sfu:subscribe`, whose lines' msids name each track's owner; tiles ask
// `video_wanted` of each participant as in a mesh (the server turns it into a pause or a layer).

const CAMERA = 'huddle-video';
const AUDIO = 'huddle-audio';
const SCREEN = 'huddle-screen';

/** The m-sections of an SDP: kind, mid, and msid stream and track ids, in order. */
export function mediaSections(sdp) {
  const sections = [];
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) sections.push({ kind: line.slice(2).split(' ')[0], mid: null, stream: null, track: null });
    const current = sections[sections.length - 1];
    if (!current) continue;
    if (line.startsWith('a=mid:')) current.mid = line.slice(6).trim();
    if (line.startsWith('a=msid:')) [current.stream, current.track] = line.slice(7).trim().split(' ');
  }
  return sections;
}

/** The SFU's two pseudo-participants. */
export const SFU_PUBLISH = 'sfu:publish';
export const SFU_SUBSCRIBE = 'sfu:subscribe';

/** Whose and which track a line of the SFU's offer carries: its msid track id is
 *  `video-<uid>`, `audio-<uid>` or `screen-<uid>` (`null` for anything else). */
export function sfuTrackOwner(trackId) {
  const match = /^(video|audio|screen)-(.+)$/.exec(trackId || '');
  if (!match) return null;
  return { role: match[1] === 'video' ? 'camera' : match[1], uid: match[2] };
}

/** Which section is the camera's and which the screen's: Huddle's stream ids say it, or
 *  else the first video line is the camera and the next the screen. */
export function videoRoles(sections) {
  const video = sections.filter((s) => s.kind === 'video');
  const screen = video.find((s) => s.stream === SCREEN) || video.filter((s) => s.stream !== CAMERA)[1];
  const camera = video.find((s) => s.stream === CAMERA) || video.find((s) => s !== screen);
  return { camera: camera ? camera.mid : null, screen: screen ? screen.mid : null };
}

/** `sdp` as we send it: each section's msid says what it carries (the copy we keep is the
 *  browser's own; only the remote side reads these ids). */
export function labelled(sdp, roles) {
  const [session, ...sections] = sdp.split(/\r\n(?=m=)/);
  const relabel = (section) => {
    const mid = (section.match(/^a=mid:(.+)$/m) || [])[1];
    const stream = mid === undefined ? null
      : mid === roles.camera ? CAMERA : mid === roles.screen ? SCREEN : mid === roles.audio ? AUDIO : null;
    if (!stream) return section;
    let lines = section.split('\r\n').filter((line) => line !== '');
    let hasMsid = false;
    lines = lines.map((line) => {
      if (line.startsWith('a=msid:')) {
        hasMsid = true;
        return `a=msid:${stream} ${line.slice(7).split(' ')[1] || stream + '-track'}`;
      }
      const ssrc = line.match(/^(a=ssrc:\d+) msid:\S+ ?(\S*)$/);
      return ssrc ? `${ssrc[1]} msid:${stream} ${ssrc[2] || stream + '-track'}` : line;
    });
    if (!hasMsid) lines.push(`a=msid:${stream} ${stream}-track`);
    return lines.join('\r\n');
  };
  return [session, ...sections.map(relabel)].join('\r\n').replace(/(\r\n)*$/, '\r\n');
}

/** At most this many offers in 30 s on one connection (a renegotiation loop is cut). */
const MAX_RENEGOTIATIONS = 10;

export class Peer {
  constructor(call, uid) {
    this.call = call;
    this.uid = uid;
    this.offerer = call.localUid < uid;
    this.pc = new RTCPeerConnection({ iceServers: call.iceServers });
    this.transceivers = { camera: null, audio: null, screen: null };
    this.pendingCandidates = [];
    this.offers = [];
    this.tracks = {};
    this.pc.onicecandidate = (event) => {
      const c = event.candidate ? event.candidate.toJSON() : {};
      this.signal({ kind: 'candidate', ...c });
    };
    this.pc.ontrack = (event) => this.onTrack(event);
    this.pc.onconnectionstatechange = () => call.changed();
  }

  signal(signal) {
    this.call.connection.request('signal', { session_id: this.call.sessionId, to: this.uid, signal }).catch(() => {});
  }

  /** The offerer's first step: our three lines, then the offer. */
  async start() {
    const [camera, microphone] = [this.call.outgoing('camera'), this.call.outgoing('audio')];
    const screenStream = new MediaStream();
    if (this.call.video) {
      this.transceivers.camera = this.pc.addTransceiver(camera || 'video', { direction: 'sendrecv', streams: [this.call.localStream] });
    }
    this.transceivers.audio = this.pc.addTransceiver(microphone || 'audio', { direction: 'sendrecv', streams: [this.call.localStream] });
    this.transceivers.screen = this.pc.addTransceiver(this.call.screenTrack || 'video', { direction: 'sendrecv', streams: [screenStream] });
    await this.offer();
  }

  async offer() {
    if (!this.budget()) return;
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this.signal({ kind: 'offer', sdp: labelled(this.pc.localDescription.sdp, this.roles()) });
  }

  roles() {
    const mid = (t) => (t ? t.mid : null);
    return { camera: mid(this.transceivers.camera), audio: mid(this.transceivers.audio), screen: mid(this.transceivers.screen) };
  }

  budget() {
    const now = performance.now();
    this.offers = this.offers.filter((at) => now - at < 30000);
    if (this.offers.length >= MAX_RENEGOTIATIONS) {
      this.call.report(`renegotiation loop with ${this.uid}: more than ${MAX_RENEGOTIATIONS} in 30 s`);
      return false;
    }
    this.offers.push(now);
    return true;
  }

  async handle(signal) {
    if (signal.kind === 'offer') {
      if (this.pc.remoteDescription && !this.budget()) return;
      await this.pc.setRemoteDescription({ type: 'offer', sdp: signal.sdp });
      this.adoptTransceivers(signal.sdp);
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      this.signal({ kind: 'answer', sdp: labelled(this.pc.localDescription.sdp, this.roles()) });
      await this.flushCandidates();
    } else if (signal.kind === 'answer') {
      if (this.pc.signalingState !== 'have-local-offer') return;
      await this.pc.setRemoteDescription({ type: 'answer', sdp: signal.sdp });
      await this.flushCandidates();
    } else if (signal.kind === 'candidate') {
      const init = {
        candidate: signal.candidate ?? '',
        sdpMid: signal.sdpMid ?? signal.sdp_mid ?? null,
        sdpMLineIndex: signal.sdpMLineIndex ?? signal.sdp_mline_index ?? null,
        usernameFragment: signal.usernameFragment ?? signal.username_fragment ?? null,
      };
      if (!init.candidate) return; // end of candidates
      if (!init.sdpMid && init.sdpMLineIndex === null) init.sdpMLineIndex = 0;
      if (this.pc.remoteDescription) await this.pc.addIceCandidate(init).catch(() => {});
      else this.pendingCandidates.push(init);
    } else if (signal.kind === 'video_wanted') {
      this.applyVideoWanted(signal.paused, signal.max_bitrate_bps);
    } else if (signal.kind === 'renegotiation_wanted') {
      if (this.offerer && !this.transceivers.camera && this.call.video) {
        this.transceivers.camera = this.pc.addTransceiver(this.call.outgoing('camera') || 'video', { streams: [this.call.localStream] });
        await this.offer();
      }
    }
  }

  /** As the answerer: our tracks go on the offer's lines (camera, microphone, screen). */
  adoptTransceivers(sdp) {
    const sections = mediaSections(sdp);
    const roles = videoRoles(sections);
    const audioMid = (sections.find((s) => s.kind === 'audio') || {}).mid;
    const byMid = (mid) => this.pc.getTransceivers().find((t) => t.mid === mid) || null;
    const attach = (name, mid, track, stream) => {
      const transceiver = byMid(mid);
      if (!transceiver || this.transceivers[name] === transceiver) return;
      this.transceivers[name] = transceiver;
      transceiver.direction = 'sendrecv';
      if (track) transceiver.sender.replaceTrack(track);
      if (stream && transceiver.sender.setStreams) transceiver.sender.setStreams(stream);
    };
    if (roles.camera && this.call.video) attach('camera', roles.camera, this.call.outgoing('camera'), this.call.localStream);
    if (audioMid) attach('audio', audioMid, this.call.outgoing('audio'), this.call.localStream);
    if (roles.screen) attach('screen', roles.screen, this.call.screenTrack, new MediaStream());
  }

  async flushCandidates() {
    for (const init of this.pendingCandidates.splice(0)) await this.pc.addIceCandidate(init).catch(() => {});
  }

  async applyVideoWanted(paused, maxBitrate) {
    const transceiver = this.transceivers.camera;
    if (!transceiver) return;
    const params = transceiver.sender.getParameters();
    if (!params.encodings || params.encodings.length === 0) return;
    params.encodings[0].active = !paused;
    if (maxBitrate > 0) params.encodings[0].maxBitrate = maxBitrate;
    else delete params.encodings[0].maxBitrate;
    await transceiver.sender.setParameters(params).catch((e) => this.call.report(`setParameters: ${e}`));
  }

  onTrack(event) {
    const track = event.track;
    let role = 'audio';
    if (track.kind === 'video') {
      const stream = event.streams[0] ? event.streams[0].id : '';
      const roles = videoRoles(mediaSections(this.pc.remoteDescription ? this.pc.remoteDescription.sdp : ''));
      const mid = event.transceiver ? event.transceiver.mid : null;
      role = stream === SCREEN || (stream !== CAMERA && mid !== null && mid === roles.screen) ? 'screen' : 'camera';
    }
    this.tracks[role] = track;
    track.onunmute = () => this.call.changed();
    this.call.changed();
  }

  async replace(kind, track) {
    const transceiver = this.transceivers[kind];
    if (transceiver) await transceiver.sender.replaceTrack(track);
  }

  close() {
    this.pc.close();
  }
}

/** Our connection publishing to the SFU: we offer our camera, microphone and screen lines,
 *  sending only, and take its answer. */
class SfuPublisher extends Peer {
  constructor(call) {
    super(call, SFU_PUBLISH);
    this.offerer = true;
  }

  async start() {
    const [camera, microphone] = [this.call.outgoing('camera'), this.call.outgoing('audio')];
    if (this.call.video) this.transceivers.camera = this.pc.addTransceiver(camera || 'video', { direction: 'sendonly', streams: [this.call.localStream] });
    this.transceivers.audio = this.pc.addTransceiver(microphone || 'audio', { direction: 'sendonly', streams: [this.call.localStream] });
    this.transceivers.screen = this.pc.addTransceiver(this.call.screenTrack || 'video', { direction: 'sendonly', streams: [new MediaStream()] });
    await this.offer();
  }

  /** The SFU tells us which layers anyone receives; we send one. */
  async handle(signal) {
    if (signal.kind === 'layers_wanted') return;
    await super.handle(signal);
  }
}

/** Our connection receiving everyone from the SFU: it offers whenever people come and go,
 *  and we answer, receiving only; each line's msid names whose track it is. */
class SfuSubscriber extends Peer {
  constructor(call) {
    super(call, SFU_SUBSCRIBE);
    this.offerer = false;
    this.pc.ontrack = () => this.assignTracks();
  }

  /** The SFU drives renegotiation: no loop to cut here. */
  budget() {
    return true;
  }

  /** We send nothing on this connection. */
  adoptTransceivers() {}

  async handle(signal) {
    await super.handle(signal);
    if (signal.kind === 'offer') this.assignTracks();
  }

  /** Every receiving line's track goes to its owner's view (lines are reused as people come
   *  and go, so all are looked at again after each offer). */
  assignTracks() {
    const sections = mediaSections(this.pc.remoteDescription ? this.pc.remoteDescription.sdp : '');
    for (const transceiver of this.pc.getTransceivers()) {
      const section = sections.find((s) => s.mid !== null && s.mid === transceiver.mid);
      const owner = section && sfuTrackOwner(section.track);
      if (!owner || owner.uid === this.call.localUid) continue;
      const view = this.call.views.get(owner.uid);
      if (!view || view.tracks[owner.role] === transceiver.receiver.track) continue;
      view.tracks[owner.role] = transceiver.receiver.track;
      view.mids[owner.role] = transceiver.mid;
      transceiver.receiver.track.onunmute = () => this.call.changed();
    }
    this.call.changed();
  }
}

/** A participant seen through the SFU: their tracks on our receiving connection, and the
 *  signals we send them (`video_wanted`). */
class SfuView {
  constructor(call, uid) {
    this.call = call;
    this.uid = uid;
    this.tracks = {};
    this.mids = {};
  }

  get pc() {
    return this.call.sfu.subscriber.pc;
  }

  signal(signal) {
    this.call.connection.request('signal', { session_id: this.call.sessionId, to: this.uid, signal }).catch(() => {});
  }

  async replace() {}

  close() {}
}

/** Adds an `inbound-rtp` report to a remote's `entry`: video frames decoded by `videoRole`
 *  (`camera` or `screen`, and the camera's width), audio packets and level. */
function countReceived(entry, s, videoRole) {
  if (s.kind === 'video') {
    entry[videoRole === 'screen' ? 'screen_frames_decoded' : 'camera_frames_decoded'] += s.framesDecoded || 0;
    if (videoRole === 'camera') entry.camera_width = s.frameWidth || entry.camera_width;
  } else {
    entry.audio_packets_received += s.packetsReceived || 0;
    entry.audio_level = Math.max(entry.audio_level, s.audioLevel || 0);
  }
}

/** Adds an `outbound-rtp` report to `entry`: the camera's (line `cameraMid`) frames and
 *  packets, and audio packets. */
function countSent(entry, s, cameraMid) {
  if (s.type !== 'outbound-rtp') return;
  if (s.kind === 'video' && s.mid === cameraMid) {
    entry.video_frames_encoded += s.framesEncoded || 0;
    entry.video_packets_sent += s.packetsSent || 0;
  }
  if (s.kind === 'audio') entry.audio_packets_sent += s.packetsSent || 0;
}

export class Call extends EventTarget {
  constructor({ connection, localUid, sessionId, video, iceServers, local, localStream }) {
    super();
    this.connection = connection;
    this.localUid = localUid;
    this.sessionId = sessionId;
    this.video = video;
    this.iceServers = iceServers || [];
    this.local = local;
    this.localStream = localStream;
    this.screenTrack = null;
    this.silenced = { camera: false, audio: false };
    this.peers = new Map();
    /** `mesh`, or `sfu` (then `sfu` holds our two connections, and `peers` the views). */
    this.route = 'mesh';
    this.sfu = null;
    this.errors = [];
    this.wanted = new Map();
    this.wantTimer = setInterval(() => this.resendWanted(), 2000);
  }

  report(message) {
    this.errors.push(message);
    console.warn(message);
  }

  changed() {
    this.dispatchEvent(new Event('changed'));
  }

  /** The views of participants through the SFU (the same map as `peers` then). */
  get views() {
    return this.peers;
  }

  /** Moves the call to `route` with the participants `uids`: the old connections close and
   *  the new ones open (the session, its participants and their states go on). */
  async setRoute(route, uids) {
    if (route === this.route && (this.sfu || route === 'mesh') && this.peers.size > 0) return;
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    if (this.sfu) {
      this.sfu.publisher.close();
      this.sfu.subscriber.close();
      this.sfu = null;
    }
    this.route = route;
    if (route === 'sfu') {
      this.sfu = { publisher: new SfuPublisher(this), subscriber: new SfuSubscriber(this) };
      await this.sfu.publisher.start().catch((e) => this.report(`publishing to the SFU: ${e}`));
    }
    for (const uid of uids) await this.add(uid);
    this.changed();
  }

  async add(uid) {
    if (uid === this.localUid || this.peers.has(uid)) return this.peers.get(uid);
    if (this.route === 'sfu') {
      const view = new SfuView(this, uid);
      this.peers.set(uid, view);
      if (this.sfu) this.sfu.subscriber.assignTracks();
      this.changed();
      return view;
    }
    const peer = new Peer(this, uid);
    this.peers.set(uid, peer);
    if (peer.offerer) await peer.start().catch((e) => this.report(`offer to ${uid}: ${e}`));
    this.changed();
    return peer;
  }

  remove(uid) {
    const peer = this.peers.get(uid);
    if (peer) peer.close();
    this.peers.delete(uid);
    this.wanted.delete(uid);
    this.changed();
  }

  async handleSignal(from, signal) {
    if (from === SFU_PUBLISH || from === SFU_SUBSCRIBE) {
      // Signals of an SFU we left (they raced `media_route_changed`) are stale.
      if (!this.sfu) return;
      const connection = from === SFU_PUBLISH ? this.sfu.publisher : this.sfu.subscriber;
      await connection.handle(signal).catch((e) => this.report(`signal from ${from}: ${e}`));
      return;
    }
    if (this.route === 'sfu') return;
    const peer = this.peers.get(from) || (await this.add(from));
    await peer.handle(signal).catch((e) => this.report(`signal from ${from}: ${e}`));
  }

  /** What our tiles show of `uid`: paused when hidden, a cap when small (the app's rule). */
  want(uid, widthPx) {
    const wanted = widthPx <= 0 ? { paused: true, max_bitrate_bps: 0 }
      : widthPx < 240 ? { paused: false, max_bitrate_bps: 250000 }
      : widthPx < 520 ? { paused: false, max_bitrate_bps: 800000 }
      : { paused: false, max_bitrate_bps: 0 };
    const before = this.wanted.get(uid);
    this.wanted.set(uid, wanted);
    if (!before || before.paused !== wanted.paused || before.max_bitrate_bps !== wanted.max_bitrate_bps) {
      this.sendWanted(uid, wanted);
    }
  }

  sendWanted(uid, wanted) {
    const peer = this.peers.get(uid);
    if (peer) peer.signal({ kind: 'video_wanted', ...wanted });
  }

  resendWanted() {
    for (const [uid, wanted] of this.wanted) this.sendWanted(uid, wanted);
  }

  /** The connections we send on: one per remote in a mesh, the publishing one through the
   *  SFU. */
  senders() {
    return this.sfu ? [this.sfu.publisher] : [...this.peers.values()];
  }

  async setScreen(track) {
    this.screenTrack = track;
    for (const peer of this.senders()) await peer.replace('screen', track);
  }

  /** What we send as `kind` ('camera' or 'audio'): the local track, or nothing while
   *  muted or paused (a silenced sender sends no packets at all, as Huddle's clients do). */
  outgoing(kind) {
    if (this.silenced[kind]) return null;
    return kind === 'camera' ? this.local.camera : this.local.microphone;
  }

  async silence(kind, silenced) {
    this.silenced[kind] = silenced;
    await this.resend(kind);
  }

  /** Puts what we send as `kind` on every connection (after a mute or a device change). */
  async resend(kind) {
    for (const peer of this.senders()) await peer.replace(kind, this.outgoing(kind));
  }

  /** Per remote: frames decoded (camera, screen), audio received, and what we sent (through
   *  the SFU, what we sent is under `sfu:publish`). */
  async stats() {
    if (this.sfu) return this.sfuStats();
    const out = {};
    for (const [uid, peer] of this.peers) {
      const entry = { camera_frames_decoded: 0, screen_frames_decoded: 0, audio_packets_received: 0,
        audio_level: 0, video_frames_encoded: 0, video_packets_sent: 0, audio_packets_sent: 0,
        connection: peer.pc.connectionState, camera_width: 0 };
      const report = await peer.pc.getStats();
      const roles = peer.roles();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp') countReceived(entry, s, s.mid !== undefined && s.mid === roles.screen ? 'screen' : 'camera');
        countSent(entry, s, roles.camera);
      });
      out[uid] = entry;
    }
    return out;
  }

  async sfuStats() {
    const out = {};
    const { publisher, subscriber } = this.sfu;
    const owners = new Map();
    for (const section of mediaSections(subscriber.pc.remoteDescription ? subscriber.pc.remoteDescription.sdp : '')) {
      const owner = sfuTrackOwner(section.track);
      if (owner && section.mid !== null) owners.set(section.mid, owner);
    }
    for (const uid of this.peers.keys()) {
      out[uid] = { camera_frames_decoded: 0, screen_frames_decoded: 0, audio_packets_received: 0,
        audio_level: 0, connection: subscriber.pc.connectionState, camera_width: 0 };
    }
    (await subscriber.pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const owner = owners.get(s.mid);
      const entry = owner && out[owner.uid];
      if (entry) countReceived(entry, s, owner.role);
    });
    const sent = { video_frames_encoded: 0, video_packets_sent: 0, audio_packets_sent: 0, connection: publisher.pc.connectionState };
    const roles = publisher.roles();
    (await publisher.pc.getStats()).forEach((s) => countSent(sent, s, roles.camera));
    out[SFU_PUBLISH] = sent;
    return out;
  }

  end() {
    clearInterval(this.wantTimer);
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    if (this.sfu) {
      this.sfu.publisher.close();
      this.sfu.subscriber.close();
      this.sfu = null;
    }
    if (this.screenTrack) this.screenTrack.stop();
  }
}
