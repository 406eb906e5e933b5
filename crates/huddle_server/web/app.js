// The Huddle web client: the page's state and views. The protocol is in protocol.js, the
// media in call.js. Logging in, contacts and groups with presence, ringing both ways with a
// ringtone, joining a session, the three layouts with click to pin, mute, pause video,
// screen share, raised hand, per-participant volume, device pickers and the participants
// list. `window.huddle` exposes the state and the media statistics (the browser tests read
// them).

import { Connection, serverUrl } from './protocol.js';
import { Call } from './call.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'huddle.auth';

const state = {
  connection: null,
  user: null,
  authToken: null,
  contacts: new Map(),
  groups: [],
  ringing: null, // { call, incoming }
  call: null,
  session: null, // { id, participants: Map, oneToOne }
  layout: 'grid',
  pinned: null,
  dominant: null,
  speaking: new Map(),
  muted: false,
  videoPaused: false,
  hand: false,
  sharing: false,
  volumes: new Map(),
  audioElements: new Map(),
  speaker: '',
};
window.huddle = { state, stats: async () => (state.call ? state.call.stats() : {}) };

function show(view) {
  for (const id of ['login-view', 'home-view', 'call-view']) $(id).hidden = id !== view;
}

// ---- login ----

async function login(uid, name, token) {
  const connection = new Connection(serverUrl());
  await connection.open();
  const fields = token ? { uid, auth_token: token } : { uid, name: name || undefined };
  const answer = await connection.request('login', fields);
  state.connection = connection;
  state.user = answer.user;
  state.authToken = answer.auth_token;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ uid, token: answer.auth_token }));
  state.contacts = new Map(answer.contacts.map((c) => [c.user.uid, c]));
  state.groups = answer.groups;
  for (const type of ['incoming_call_received', 'outgoing_call_accepted', 'outgoing_call_rejected',
    'incoming_call_cancelled', 'call_ended', 'participant_joined', 'participant_left',
    'session_ended', 'signal', 'participant_state', 'presence', 'media_route_changed']) {
    connection.addEventListener(type, (e) => onEvent(type, e.detail));
  }
  connection.addEventListener('closed', () => {
    if (state.connection === connection) logout('disconnected');
  });
  $('me').textContent = `${answer.user.name} (${answer.user.uid})`;
  renderHome();
  show('home-view');
}

function logout(reason) {
  if (state.call) leaveCall(false);
  stopRinging();
  sessionStorage.removeItem(TOKEN_KEY);
  const connection = state.connection;
  state.connection = null;
  state.authToken = null;
  state.user = null;
  if (connection) connection.close();
  $('login-error').textContent = reason === 'disconnected' ? 'Disconnected from the server.' : '';
  show('login-view');
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  try {
    await login($('login-uid').value.trim(), $('login-name').value.trim(), $('login-token').value.trim());
  } catch (err) {
    $('login-error').textContent = err.message;
  }
});
$('logout-button').addEventListener('click', () => logout('user'));

// ---- home ----

function renderHome() {
  const contacts = $('contacts');
  contacts.replaceChildren();
  for (const { user, online } of [...state.contacts.values()].sort((a, b) => a.user.uid.localeCompare(b.user.uid))) {
    const li = document.createElement('li');
    li.dataset.uid = user.uid;
    const dot = document.createElement('span');
    dot.className = online ? 'dot online' : 'dot';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = user.name;
    li.append(dot, name, callButton('Video', 'user', user.uid, 'video'), callButton('Audio', 'user', user.uid, 'audio'));
    contacts.append(li);
  }
  const groups = $('groups');
  groups.replaceChildren();
  for (const group of state.groups) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = `${group.name} (${group.members.length})`;
    li.append(name, callButton('Call', 'group', group.guid, 'video'));
    groups.append(li);
  }
}

function callButton(text, receiverType, id, callType) {
  const button = document.createElement('button');
  button.textContent = text;
  button.className = `call-${callType}`;
  button.addEventListener('click', () => placeCall(receiverType, id, callType));
  return button;
}

async function placeCall(receiverType, receiverId, callType) {
  $('home-error').textContent = '';
  try {
    const answer = await state.connection.request('initiate_call', { receiver_id: receiverId, receiver_type: receiverType, call_type: callType });
    state.ringing = { call: answer.call, incoming: false };
    startRinging(`Calling ${receiverId}…`, false);
  } catch (err) {
    $('home-error').textContent = err.message;
  }
}

$('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('home-error').textContent = '';
  await joinSession($('join-session').value.trim(), !$('join-audio-only').checked).catch((err) => {
    $('home-error').textContent = err.message;
  });
});

// ---- ringing ----

let ringtone = null;

function startRinging(text, incoming) {
  $('ringing-text').textContent = text;
  $('accept-button').hidden = !incoming;
  $('reject-button').hidden = !incoming;
  $('busy-button').hidden = !incoming;
  $('cancel-button').hidden = incoming;
  $('ringing').hidden = false;
  if (incoming) ringtone = playRingtone();
}

function stopRinging() {
  $('ringing').hidden = true;
  if (ringtone) ringtone();
  ringtone = null;
  state.ringing = null;
}

/** The ringtone: 440 + 480 Hz, two seconds on and four off, until stopped. */
function playRingtone() {
  let context;
  try {
    context = new AudioContext();
  } catch {
    return () => {};
  }
  const gain = context.createGain();
  gain.gain.value = 0;
  gain.connect(context.destination);
  for (const hz of [440, 480]) {
    const tone = context.createOscillator();
    tone.frequency.value = hz;
    tone.connect(gain);
    tone.start();
  }
  const start = context.currentTime;
  for (let i = 0; i < 60; i++) {
    gain.gain.setValueAtTime(0.15, start + i * 6);
    gain.gain.setValueAtTime(0, start + i * 6 + 2);
  }
  return () => context.close();
}

$('accept-button').addEventListener('click', async () => {
  const { call } = state.ringing;
  stopRinging();
  try {
    await state.connection.request('accept_call', { session_id: call.session_id });
    await joinSession(call.session_id, call.call_type === 'video');
  } catch (err) {
    $('home-error').textContent = err.message;
  }
});
$('reject-button').addEventListener('click', () => endRinging('rejected'));
$('busy-button').addEventListener('click', () => endRinging('busy'));
$('cancel-button').addEventListener('click', () => endRinging('cancelled'));

async function endRinging(status) {
  const { call } = state.ringing || {};
  stopRinging();
  if (call) await state.connection.request('reject_call', { session_id: call.session_id, status }).catch(() => {});
}

// ---- events ----

async function onEvent(type, frame) {
  switch (type) {
    case 'incoming_call_received':
      if (state.call || state.ringing) {
        await state.connection.request('reject_call', { session_id: frame.call.session_id, status: 'busy' }).catch(() => {});
        return;
      }
      state.ringing = { call: frame.call, incoming: true };
      startRinging(`${frame.call.initiator.name} is calling (${frame.call.call_type})`, true);
      return;
    case 'outgoing_call_accepted':
      if (state.ringing && state.ringing.call.session_id === frame.call.session_id) {
        const call = state.ringing.call;
        stopRinging();
        await joinSession(call.session_id, call.call_type === 'video').catch((err) => {
          $('home-error').textContent = err.message;
        });
      }
      return;
    case 'outgoing_call_rejected':
    case 'incoming_call_cancelled':
      if (state.ringing && state.ringing.call.session_id === frame.call.session_id) {
        stopRinging();
        $('home-error').textContent = `Call ${frame.call.status}.`;
      }
      return;
    case 'call_ended':
    case 'session_ended':
      if (state.session && state.session.id === (frame.session_id || frame.call.session_id)) leaveCall(false);
      return;
    case 'participant_joined':
      if (!state.session || frame.session_id !== state.session.id) return;
      state.session.participants.set(frame.participant.uid, frame.participant);
      await state.call.add(frame.participant.uid);
      renderCall();
      return;
    case 'participant_left':
      if (!state.session || frame.session_id !== state.session.id) return;
      state.session.participants.delete(frame.uid);
      state.call.remove(frame.uid);
      if (state.pinned === frame.uid) state.pinned = null;
      renderCall();
      return;
    case 'participant_state': {
      const who = state.session && state.session.participants.get(frame.uid);
      if (who) who[frame.change.kind] = frame.change.value;
      renderCall();
      return;
    }
    case 'signal':
      if (state.call && frame.session_id === state.session.id) await state.call.handleSignal(frame.from, frame.signal);
      return;
    case 'media_route_changed':
      // The call grew past the server's SFU threshold (or its SFU failed): new connections.
      if (state.call && frame.session_id === state.session.id) {
        await state.call.setRoute(frame.route, [...state.session.participants.keys()]);
      }
      return;
    case 'presence': {
      const entry = state.contacts.get(frame.user.uid) || { user: frame.user, online: false };
      entry.online = frame.online;
      state.contacts.set(frame.user.uid, entry);
      renderHome();
      return;
    }
    default:
  }
}

// ---- the call ----

async function localMedia(video) {
  const attempts = video ? [{ video: { width: 640, height: 360 }, audio: true }, { audio: true }, { video: true }] : [{ audio: true }];
  for (const constraints of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch {
      // the next, smaller ask
    }
  }
  return new MediaStream();
}

async function joinSession(sessionId, video) {
  const { call_token: callToken } = await state.connection.request('generate_token', { session_id: sessionId, auth_token: state.authToken });
  const stream = await localMedia(video);
  let joined;
  try {
    joined = await state.connection.request('join_session', { session_id: sessionId, call_token: callToken });
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop());
    throw err;
  }
  const local = { camera: stream.getVideoTracks()[0] || null, microphone: stream.getAudioTracks()[0] || null };
  state.session = { id: sessionId, participants: new Map(joined.participants.map((p) => [p.uid, p])), oneToOne: joined.one_to_one };
  state.call = new Call({ connection: state.connection, localUid: state.user.uid, sessionId, video,
    iceServers: joined.ice_servers, local, localStream: stream });
  state.call.addEventListener('changed', () => renderCall());
  Object.assign(state, { muted: false, videoPaused: !local.camera, hand: false, sharing: false, pinned: null, dominant: null });
  state.call.silenced.camera = state.videoPaused;
  if (state.videoPaused) announce('video_paused', true);
  show('call-view');
  await state.call.setRoute(joined.media_route || 'mesh', [...state.session.participants.keys()]);
  await fillDevicePickers();
  renderCall();
}

function announce(kind, value) {
  if (!state.session) return;
  state.connection.request('state', { session_id: state.session.id, change: { kind, value } }).catch(() => {});
}

function leaveCall(tell = true) {
  if (!state.call) return;
  if (tell) state.connection.request('leave_session', { session_id: state.session.id }).catch(() => {});
  state.call.end();
  state.call.localStream.getTracks().forEach((t) => t.stop());
  for (const audio of state.audioElements.values()) audio.remove();
  state.audioElements.clear();
  state.call = null;
  state.session = null;
  $('stage').replaceChildren();
  $('participants').replaceChildren();
  show(state.connection ? 'home-view' : 'login-view');
}

$('leave-button').addEventListener('click', () => leaveCall(true));

$('mute-button').addEventListener('click', async () => {
  state.muted = !state.muted;
  // A muted sender sends nothing at all (as Huddle's own clients do), not silence.
  await state.call.silence('audio', state.muted);
  announce('audio_muted', state.muted);
  renderCall();
});

$('video-button').addEventListener('click', async () => {
  state.videoPaused = !state.videoPaused;
  await state.call.silence('camera', state.videoPaused);
  announce('video_paused', state.videoPaused);
  renderCall();
});

$('share-button').addEventListener('click', async () => {
  if (state.sharing) {
    await stopSharing();
    return;
  }
  try {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = display.getVideoTracks()[0];
    track.onended = () => stopSharing();
    await state.call.setScreen(track);
    state.sharing = true;
    announce('screen_sharing', true);
  } catch (err) {
    state.call.report(`screen share: ${err}`);
  }
  renderCall();
});

async function stopSharing() {
  if (state.call.screenTrack) state.call.screenTrack.stop();
  await state.call.setScreen(null);
  state.sharing = false;
  announce('screen_sharing', false);
  renderCall();
}

$('hand-button').addEventListener('click', () => {
  state.hand = !state.hand;
  announce('hand_raised', state.hand);
  renderCall();
});

$('layout-button').addEventListener('click', () => {
  state.layout = { grid: 'spotlight', spotlight: 'single', single: 'grid' }[state.layout];
  renderCall();
});
$('panel-button').addEventListener('click', () => {
  $('participants-panel').hidden = !$('participants-panel').hidden;
  renderCall();
});

// ---- devices ----

async function fillDevicePickers() {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const fill = (select, kind, current) => {
    select.replaceChildren();
    for (const device of devices.filter((d) => d.kind === kind)) {
      const option = document.createElement('option');
      option.value = device.deviceId;
      option.textContent = device.label || `${kind} ${select.length + 1}`;
      option.selected = device.deviceId === current;
      select.append(option);
    }
  };
  const settings = (track) => (track ? track.getSettings().deviceId : '');
  fill($('camera-select'), 'videoinput', settings(state.call.local.camera));
  fill($('microphone-select'), 'audioinput', settings(state.call.local.microphone));
  fill($('speaker-select'), 'audiooutput', state.speaker);
  $('speaker-select').disabled = !('setSinkId' in HTMLMediaElement.prototype);
}

async function switchDevice(kind, deviceId) {
  const constraints = kind === 'camera' ? { video: { deviceId: { exact: deviceId }, width: 640, height: 360 } } : { audio: { deviceId: { exact: deviceId } } };
  try {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    const track = stream.getTracks()[0];
    const old = state.call.local[kind === 'camera' ? 'camera' : 'microphone'];
    state.call.local[kind === 'camera' ? 'camera' : 'microphone'] = track;
    await state.call.resend(kind === 'camera' ? 'camera' : 'audio');
    if (old) old.stop();
    renderCall();
  } catch (err) {
    state.call.report(`device: ${err}`);
  }
}

$('camera-select').addEventListener('change', (e) => switchDevice('camera', e.target.value));
$('microphone-select').addEventListener('change', (e) => switchDevice('microphone', e.target.value));
$('speaker-select').addEventListener('change', async (e) => {
  state.speaker = e.target.value;
  for (const audio of state.audioElements.values()) await audio.setSinkId(state.speaker).catch(() => {});
});

// ---- rendering the call ----

/** Tiles in the app's order: us first, then the others as they joined; a screen share is a
 *  tile of its own after its owner's. */
function tiles() {
  const list = [{ key: 'local', uid: state.user.uid, local: true }];
  for (const uid of state.session.participants.keys()) {
    if (uid === state.user.uid) continue;
    list.push({ key: uid, uid, local: false });
    const peer = state.call.peers.get(uid);
    const who = state.session.participants.get(uid);
    if (peer && peer.tracks.screen && who && who.screen_sharing) list.push({ key: `${uid}:screen`, uid, local: false, screen: true });
  }
  return list;
}

/** Grid cells for n tiles of 16:9 in a w × h area: the column count that gives the largest tiles. */
function gridCells(n, w, h, gap = 8) {
  let best = { size: 0, cols: 1 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cw = (w - gap * (cols + 1)) / cols;
    const ch = (h - gap * (rows + 1)) / rows;
    const tw = Math.min(cw, ch * 16 / 9);
    if (tw > best.size) best = { size: tw, cols };
  }
  const cols = best.cols;
  const rows = Math.ceil(n / cols);
  const cw = best.size;
  const ch = cw * 9 / 16;
  const top = (h - rows * ch - (rows - 1) * gap) / 2;
  const cells = [];
  for (let i = 0; i < n; i++) {
    const row = Math.floor(i / cols);
    const inRow = Math.min(cols, n - row * cols);
    const left = (w - inRow * cw - (inRow - 1) * gap) / 2;
    cells.push({ x: left + (i % cols) * (cw + gap), y: top + row * (ch + gap), w: cw, h: ch });
  }
  return cells;
}

/** Where each tile goes: Grid, Spotlight (main, a strip along the bottom, us floating) or
 *  Single (main only). Tiles left out are hidden (and their video paused). */
function placeTiles(list, w, h) {
  const gap = 8;
  const placed = new Map();
  if (state.layout === 'grid') {
    gridCells(list.length, w, h).forEach((cell, i) => placed.set(list[i].key, cell));
    return placed;
  }
  const remotes = list.filter((t) => !t.local);
  const main = list.find((t) => t.key === state.pinned)
    || list.find((t) => t.screen)
    || remotes.find((t) => t.uid === state.dominant)
    || remotes[0] || list[0];
  if (state.layout === 'single') {
    placed.set(main.key, { x: gap, y: gap, w: w - 2 * gap, h: h - 2 * gap });
    return placed;
  }
  const floating = list.find((t) => t.local && t !== main && remotes.length > 0);
  const strip = list.filter((t) => t !== main && t !== floating);
  const stripHeight = strip.length ? Math.min(200, Math.max(48, h * 0.22)) : 0;
  placed.set(main.key, { x: gap, y: gap, w: w - 2 * gap, h: h - stripHeight - 2 * gap });
  let cw = (stripHeight - gap) * 16 / 9;
  cw = Math.min(cw, (w - gap * (strip.length + 1)) / Math.max(1, strip.length));
  const ch = cw * 9 / 16;
  const left = (w - strip.length * cw - (strip.length - 1) * gap) / 2;
  strip.forEach((t, i) => placed.set(t.key, { x: left + i * (cw + gap), y: h - stripHeight + (stripHeight - gap - ch) / 2, w: cw, h: ch }));
  if (floating) {
    const fw = Math.min(360, Math.max(96, w * 0.2), w * 0.5);
    placed.set(floating.key, { x: w - fw - 2 * gap, y: h - stripHeight - fw * 9 / 16 - 2 * gap, w: fw, h: fw * 9 / 16, z: 2 });
  }
  return placed;
}

function tileElement(tile) {
  let element = document.querySelector(`.tile[data-key="${CSS.escape(tile.key)}"]`);
  if (!element) {
    element = document.createElement('div');
    element.className = 'tile';
    element.dataset.key = tile.key;
    element.dataset.uid = tile.uid;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    const label = document.createElement('div');
    label.className = 'label';
    element.append(video, avatar, label);
    element.addEventListener('click', () => {
      state.pinned = state.pinned === tile.key ? null : tile.key;
      if (state.pinned && state.layout === 'grid') state.layout = 'spotlight';
      renderCall();
    });
    $('stage').append(element);
  }
  return element;
}

function renderCall() {
  if (!state.call) return;
  const stage = $('stage');
  const list = tiles();
  const placed = placeTiles(list, stage.clientWidth, stage.clientHeight);
  const keys = new Set(list.map((t) => t.key));
  for (const old of stage.querySelectorAll('.tile')) if (!keys.has(old.dataset.key)) old.remove();
  for (const tile of list) {
    const element = tileElement(tile);
    const cell = placed.get(tile.key);
    const who = tile.local ? { name: state.user.name, audio_muted: state.muted, video_paused: state.videoPaused, hand_raised: state.hand }
      : state.session.participants.get(tile.uid) || { name: tile.uid };
    const peer = state.call.peers.get(tile.uid);
    const track = tile.local ? (state.videoPaused ? null : state.call.local.camera)
      : tile.screen ? peer && peer.tracks.screen : who.video_paused ? null : peer && peer.tracks.camera;
    const video = element.querySelector('video');
    if (track && (!video.srcObject || video.srcObject.getVideoTracks()[0] !== track)) video.srcObject = new MediaStream([track]);
    if (!track && video.srcObject) video.srcObject = null;
    video.hidden = !track;
    element.querySelector('.avatar').textContent = track ? '' : (who.name || '?').slice(0, 1).toUpperCase();
    element.querySelector('.label').textContent = `${tile.screen ? `${who.name}'s screen` : who.name}${who.audio_muted ? ' 🔇' : ''}${who.hand_raised ? ' ✋' : ''}`;
    element.classList.toggle('speaking', !tile.screen && !!state.speaking.get(tile.uid));
    element.classList.toggle('pinned', state.pinned === tile.key);
    element.hidden = !cell;
    if (cell) Object.assign(element.style, { left: `${cell.x}px`, top: `${cell.y}px`, width: `${cell.w}px`, height: `${cell.h}px`, zIndex: cell.z || 0 });
    if (!tile.local && !tile.screen) state.call.want(tile.uid, cell ? cell.w : 0);
  }
  renderAudio();
  renderParticipants();
  $('mute-button').textContent = state.muted ? 'Unmute' : 'Mute';
  $('mute-button').classList.toggle('on', state.muted);
  $('video-button').textContent = state.videoPaused ? 'Start video' : 'Stop video';
  $('share-button').textContent = state.sharing ? 'Stop sharing' : 'Share screen';
  $('hand-button').textContent = state.hand ? 'Lower hand' : 'Raise hand';
  $('layout-button').textContent = { grid: 'Grid', spotlight: 'Spotlight', single: 'Single' }[state.layout];
}

function renderAudio() {
  for (const [uid, peer] of state.call.peers) {
    if (!peer.tracks.audio) continue;
    let audio = state.audioElements.get(uid);
    if (!audio) {
      audio = document.createElement('audio');
      audio.autoplay = true;
      audio.dataset.uid = uid;
      document.body.append(audio);
      state.audioElements.set(uid, audio);
      if (state.speaker && audio.setSinkId) audio.setSinkId(state.speaker).catch(() => {});
    }
    if (!audio.srcObject || audio.srcObject.getAudioTracks()[0] !== peer.tracks.audio) audio.srcObject = new MediaStream([peer.tracks.audio]);
    audio.volume = state.volumes.has(uid) ? state.volumes.get(uid) : 1;
  }
  for (const [uid, audio] of state.audioElements) {
    if (!state.call.peers.has(uid)) {
      audio.remove();
      state.audioElements.delete(uid);
    }
  }
}

/** The participants panel: one row per person, kept across renders (the call re-renders
 *  every 250 ms, and a volume slider being dragged must stay the same element). */
function renderParticipants() {
  if ($('participants-panel').hidden) return;
  const list = $('participants');
  const rows = new Map([...list.children].map((li) => [li.dataset.uid, li]));
  for (const [uid, who] of state.session.participants) {
    let li = rows.get(uid);
    rows.delete(uid);
    if (!li) {
      li = participantRow(uid);
      list.append(li);
    }
    li.querySelector('.name').textContent = `${who.name}${uid === state.user.uid ? ' (you)' : ''}${who.audio_muted ? ' 🔇' : ''}${who.hand_raised ? ' ✋' : ''}`;
  }
  for (const gone of rows.values()) gone.remove();
}

function participantRow(uid) {
  const li = document.createElement('li');
  li.dataset.uid = uid;
  const name = document.createElement('span');
  name.className = 'name';
  li.append(name);
  if (uid !== state.user.uid) {
    const volume = document.createElement('input');
    volume.type = 'range';
    volume.min = '0';
    volume.max = '1';
    volume.step = '0.05';
    volume.value = String(state.volumes.has(uid) ? state.volumes.get(uid) : 1);
    volume.title = 'Volume';
    volume.addEventListener('input', () => {
      state.volumes.set(uid, Number(volume.value));
      renderAudio();
    });
    li.append(volume);
  }
  return li;
}

// ---- who speaks ----

/** Every 250 ms: a remote whose audio level is over the threshold speaks (on at once, off
 *  after 1 s below it); the loudest speaker is the dominant one, which Spotlight shows. */
setInterval(async () => {
  if (!state.call) return;
  const stats = await state.call.stats();
  const now = performance.now();
  let loudest = null;
  for (const [uid, entry] of Object.entries(stats)) {
    const who = state.session && state.session.participants.get(uid);
    const level = who && who.audio_muted ? 0 : entry.audio_level;
    if (level > 0.02) state.speaking.set(uid, now);
    else if (state.speaking.has(uid) && now - state.speaking.get(uid) > 1000) state.speaking.delete(uid);
    if (state.speaking.has(uid) && (!loudest || level > loudest.level)) loudest = { uid, level };
  }
  if (loudest) state.dominant = loudest.uid;
  renderCall();
}, 250);

window.addEventListener('resize', () => renderCall());

// A reload in the same tab keeps the login (sessionStorage, never localStorage).
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  try {
    const { uid, token } = JSON.parse(saved);
    login(uid, '', token).catch(() => sessionStorage.removeItem(TOKEN_KEY));
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}
