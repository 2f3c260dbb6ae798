'use strict';
const $ = (id) => document.getElementById(id);
const KEEP = 50;          // records shown in the log at once
const STORE = 400;        // records remembered (for filters and updates), the newest
const FIRST = 4;          // a long chunk list shows its first few chunks,
const LAST = 2;           // its last few, and how many between

// The page marks its own requests with a query parameter whose *name* is unique to this
// load: records keep a query's names (values show as *), so the page knows its own
// records, and those of other loads of the page by the common prefix, with no help from
// the server.
const OWN = '_page_' + Math.random().toString(36).slice(2, 10);
const OWN_MARK = /[?&]_page[A-Za-z0-9_]*=/;
const own = (url) => url + (url.includes('?') ? '&' : '?') + OWN + '=1';
// Upload resources (resumable uploads) live at /_uploads/<ID>.
const PARTIALS = '/_uploads/';

// -- small helpers -----------------------------------------------------------------

function box(text, kind, title) {
  const span = document.createElement('span');
  span.className = 'box ' + kind;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

function row(...boxes) {
  const div = document.createElement('div');
  div.className = 'row';
  div.append(...boxes);
  return div;
}

// Bytes as a person reads them: 34.9 MB (decimal units, as curl and disks count).
function human(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  do { value /= 1000; unit += 1; } while (value >= 1000 && unit < units.length - 1);
  return `${value.toFixed(1)} ${units[unit]}`;
}

// Said on the page beside the controls of its section (``where``: the id of that
// section's status line, which is aria-live, so a screen reader reads it out too).
function announce(where, text, isError = false) {
  const said = $(where);
  said.className = `said ${isError ? 'error' : 'words'}`;
  said.textContent = text;
}

// What went wrong, in words: the server's one-line reason, which starts with the status
// already (so never "401: 401 Unauthorized"); an RFC 9457 problem (JSON) says it as
// its ``detail``.
function problem(status, text) {
  if (status === 0) return 'the connection failed (is the server running?)';
  let line = text.trim().split('\n')[0];
  if (line.startsWith('{')) {
    try {
      const said = JSON.parse(line);
      line = said.detail || said.title || line;
    } catch (error) { /* not JSON after all: said as it came */ }
  }
  return line.startsWith(String(status)) ? line : `${status}: ${line || 'no reason given'}`;
}

// -- drawing a record --------------------------------------------------------------

function chunkBox(size) {
  const hex = size.toString(16);
  return box(`${hex}\\r\\n`, 'chunk',
             `a chunk of ${size} bytes (${hex} in hex): its size line, the data, CRLF`);
}

// A run of `count` chunks or blocks as a record lists their sizes: `first` the first
// ones (null: it lists none), `last` the last ones, none of them among the first (records
// made before they kept those have none).  `draw(size)` gives the boxes of one (size
// undefined: not known).  A long run shows its first FIRST, how many between, and, when
// the record knows where the run ends, its last LAST.
function collapsed(count, first, last, draw, noun) {
  const known = (first || []).concat(last || []);
  const endKnown = first !== null && first !== undefined
    && ((last || []).length > 0 || first.length === count);
  if (count <= FIRST + LAST + 1 && (endKnown || known.length === 0)) {
    return Array.from({length: count}, (_, i) => draw(known[i])).flat();
  }
  const boxes = [];
  for (let i = 0; i < FIRST; i++) boxes.push(...draw(known[i]));
  const tail = endKnown ? known.slice(-LAST) : [];
  const between = count - FIRST - tail.length;
  boxes.push(box(`… ${between} more ${noun}${between === 1 ? '' : 's'} …`, 'label'));
  for (const size of tail) boxes.push(...draw(size));
  return boxes;
}

// A message's chunks as they travel: each labelled with its size line in hex (decimal
// in its tooltip).
function chunkRun(facts) {
  const draw = (size) => [size === undefined
    ? box('chunk', 'chunk', 'a chunk (the record keeps no sizes for these)') : chunkBox(size)];
  return collapsed(facts.chunks, facts.sizes || null, facts.last_sizes, draw, 'chunk');
}

// The end of a chunked message: the last chunk, each trailer field line the record
// kept (values other than digests come as *), then the empty line that ends them.
function lastChunkBoxes(facts) {
  const boxes = [box('0\\r\\n', 'last', 'the last chunk: size 0')];
  for (const [name, value] of facts.trailer_fields || []) {
    boxes.push(box(`${name}: ${value}\\r\\n`, 'trailer'));
  }
  const more = (facts.trailers || 0) - (facts.trailer_fields || []).length;
  if (more > 0) boxes.push(box(`+${more} more`, 'label'));
  boxes.push(box('\\r\\n', 'delim'));
  return boxes;
}

const ended = (record) => (record.ended && typeof record.ended === 'object'
  ? record.ended : {kind: 'whole', reason: ''});
const isOpen = (record) => ended(record).kind === 'open';

// Where a body stopped short: growing while the exchange is open, else how it ended.
function stopped(record, received, of) {
  const end = ended(record);
  const amount = human(received) + (of === undefined ? '' : ` of ${human(of)}`);
  if (end.kind === 'open') return box(`receiving… ${amount} so far`, 'growing');
  const how = end.kind === 'whole' ? 'left unread' : end.kind;
  return box(`${how} after ${amount}`, 'missing', end.reason || undefined);
}

// What a request to an upload resource does (the steps of a resumable upload): a word
// for its box, and a sentence that says whose it is when this page made it; null for
// any other request.
const STEPS = {PATCH: ['append', 'an append, at the offset it names'],
               HEAD: ['offset?', 'asks the offset held'],
               GET: ['offset?', 'asks the offset held'],
               DELETE: ['cancel', 'cancels the upload']};

function partialStep(record) {
  const target = path(record);
  if (!target.startsWith(PARTIALS)) return null;
  const [word, step] = STEPS[record.request.method] || ['upload', 'a request to an upload'];
  const name = resources.get(target);
  return {word, words: name === undefined ? step : `${step}: this page's upload of ${name}`};
}

function drawRequest(record) {
  const request = record.request;
  if (request === null || request === undefined) {
    return row(box('request', 'label'), box('head unreadable', 'missing'));
  }
  const boxes = [box('request', 'label'),
                 box(`${request.method} ${request.target.slice(0, 40)} · ${request.head} B`, 'head',
                     request.target),
                 box('\\r\\n\\r\\n', 'delim')];
  const body = request.body || {framing: 'none'};
  const end = ended(record);
  if (body.framing === 'unread' && end.kind === 'open') {
    // No thread has opened the body yet: the record says what the exchange waits for.
    boxes.push(box(`${end.reason || 'waiting'}…`, 'growing'));
  } else if (body.framing === 'chunked') {
    boxes.push(...chunkRun(body));
    if (body.done) boxes.push(...lastChunkBoxes(body));
    else boxes.push(stopped(record, body.bytes));
  } else if (body.framing === 'content-length') {
    boxes.push(box(`content-length ${body.length}`, 'length', `${human(body.length)} measured`));
    if (body.done === false && body.bytes < body.length) {
      boxes.push(stopped(record, body.bytes, body.length));
    }
  }
  const step = partialStep(record);
  if (step) {
    boxes.push(box(`resumable: ${step.word}`, 'label step', `${step.words} (a step of a `
                   + 'resumable upload, draft-ietf-httpbis-resumable-upload)'));
  }
  return row(...boxes);
}

// Interim (1xx) responses, each a head of its own sent before the final one: its status
// line, the fields the record kept (an upload resource's Location as *), the empty line.
const INTERIM = {100: 'Continue', 102: 'Processing', 103: 'Early Hints',
                 104: 'Upload Resumption Supported'};

function interimBoxes(record) {
  const boxes = [];
  for (const interim of record.interim || []) {
    const line = `${interim.status} ${INTERIM[interim.status] || ''}`.trim();
    const title = 'an interim response: a head of its own, before the final one';
    if (!interim.fields.length) {
      boxes.push(box(line, 'head interim', title), box('\\r\\n\\r\\n', 'delim'));
      continue;
    }
    boxes.push(box(`${line}\\r\\n`, 'head interim', title));
    for (const [name, value] of interim.fields) {
      boxes.push(box(`${name}: ${value}\\r\\n`, 'trailer interim-field'));
    }
    boxes.push(box('\\r\\n', 'delim'));
  }
  return boxes;
}

function drawResponse(record) {
  const response = record.response || {status: null};
  const end = ended(record);
  const interim = interimBoxes(record);
  if (response.status === null || response.status === undefined) {
    return row(box('response', 'label'), ...interim, end.kind === 'open'
      ? box('not sent yet', 'growing') : box('no response sent', 'missing', end.reason));
  }
  const boxes = [box('response', 'label'), ...interim,
                 box(String(response.status), 'head',
                     interim.length ? 'the final response, after the interim ones' : undefined),
                 box('\\r\\n\\r\\n', 'delim')];
  // Cut: the record says so, or says the response did not reach its end (done false),
  // as when the client of a streaming echo left; an event stream kept open is not cut.
  const cut = end.kind === 'response cut' ||
    (response.done === false && end.kind !== 'open' && response.framing !== 'stream');
  if (response.framing === 'chunked') {
    boxes.push(...chunkRun(response));
    if (cut) boxes.push(box(`cut after ${human(response.bytes)}`, 'missing', end.reason));
    else if (end.kind === 'open') boxes.push(box('sending…', 'growing'));
    else boxes.push(...lastChunkBoxes(response));
  } else if (response.framing === 'content-length') {
    boxes.push(box(`content-length ${response.length}`, 'length'));
    if (cut) boxes.push(box(`cut after ${human(response.bytes)}`, 'missing', end.reason));
    else if (end.kind === 'open') {
      boxes.push(box(`sending… ${human(response.bytes)} of ${human(response.length)}`,
                     'growing'));
    }
  } else if (response.framing === 'stream') {
    boxes.push(box('a chunk per record, as they come…', 'chunk'));
  } else if (response.framing === 'close') {
    boxes.push(end.kind === 'open'
      ? box(`sending… ${human(response.bytes)} so far`, 'growing')
      : box(`${human(response.bytes)} until the connection closes`, 'length'));
  }
  return row(...boxes);
}

function drawBlocks(record) {
  // A block's length prefix is binary (4 bytes, big-endian), not text: no digits to show
  // as they travel, so its size is drawn in decimal.
  const draw = (size) => [box('len', 'delim', 'a 4-byte big-endian length prefix'),
                          box(String(size), 'block', `a block of ${size} bytes, after its `
                              + '4-byte big-endian length prefix (binary: shown in decimal)')];
  const boxes = [box('blocks', 'label'),
                 ...collapsed(record.blocks, record.sizes, record.last_sizes, draw, 'block')];
  const end = record.ended;
  if (end === 'ended by the empty block' || (end && end.kind === 'whole')) {
    boxes.push(box('len 0', 'last', 'the empty block that ends the stream'));
  } else if (end && end.kind === 'open') {
    boxes.push(box(`receiving… ${human(record.bytes)} so far`, 'growing'));
  } else {
    boxes.push(box(typeof end === 'string' ? end : `${end.kind}: ${end.reason}`, 'missing'));
  }
  return row(...boxes);
}

// -- TLS: chapter 5 one level down ------------------------------------------------
// Under HTTP's delimiter and chunks, TLS cuts the stream into records: a 5-byte header
// (content type, version, a 2-byte length prefix) and that many bytes, as a block is a
// 4-byte length and its bytes.  The header is binary: drawn in hex as it travels.

const TLS_TYPES = {change_cipher_spec: 20, alert: 21, handshake: 22, application_data: 23,
                   heartbeat: 24};
const hex2 = (n) => n.toString(16).padStart(2, '0');

// One record as a record lists it ([type, version, length]; undefined: not listed).
function tlsRecordBoxes(entry) {
  if (entry === undefined) return [box('record', 'tlsdata', 'a TLS record (sizes not listed)')];
  const [type, version, length] = entry;
  const code = TLS_TYPES[type] || 0;
  const [major, minor] = String(version).split('.').map(Number);
  const bytes = [code, major, minor, length >> 8, length & 0xff].map(hex2);
  const header = box(bytes.join(' '), 'delim tlshead',
                     `a TLS record header, 5 bytes: type ${code} (${type}), version `
                     + `${major}.${minor}, length ${length} (${bytes[3]} ${bytes[4]}: binary, `
                     + 'shown in hex as on the wire)');
  const what = type === 'application_data' ? '' : `${type} `;
  const unit = document.createElement('span');     // a record's two boxes wrap as one
  unit.className = 'tlsrecord';
  unit.append(header, box(`${what}${length} B`, `tlsdata ${type}`,
                          `${length} bytes of ${type} after the 5-byte header`
                          + (type === 'application_data' ? ' (encrypted)' : '')));
  return [unit];
}

// A row of one direction's records (records.direction_dict): long runs collapsed as
// chunks are, the handshake messages read in clear after them.
function tlsRow(label, facts, title) {
  const boxes = [box(label, 'label', title)];
  if (facts.records === 0) {
    boxes.push(box('no records of its own', 'label',
                   'its bytes crossed the socket with an earlier exchange (pipelined)'));
  } else {
    boxes.push(...collapsed(facts.records, facts.sizes || null, [], tlsRecordBoxes, 'record'));
  }
  if ((facts.messages || []).length) {
    boxes.push(box(`messages: ${facts.messages.join(', ')}`, 'trailer',
                   'the handshake messages these records carried, read while in clear'));
  }
  if (facts.malformed) boxes.push(box('not TLS', 'missing', facts.malformed));
  const drawn = row(...boxes);
  drawn.classList.add('tls');
  return drawn;
}

const CROSSED = ' (records are counted as they cross the socket: a pipelined request may '
  + 'come in an earlier exchange\'s records)';

function drawRecord(record) {
  const out = document.createElement('div');
  if (record.kind === 'blocks') {
    out.append(drawBlocks(record));
    return out;
  }
  const secure = record.tls;
  if (secure && secure.handshake) {
    const version = [secure.version, secure.alpn].filter(Boolean).join(' · ');
    out.append(tlsRow('handshake in', secure.handshake.received,
                      `the TLS handshake's records from the client (${version})`),
               tlsRow('handshake out', secure.handshake.sent,
                      `the TLS handshake's records to the client (${version})`));
  }
  out.append(drawRequest(record));
  if (secure) {
    out.append(tlsRow('TLS in', secure.received,
                      'the TLS records that crossed while this exchange was read' + CROSSED));
  }
  out.append(drawResponse(record));
  if (secure) {
    out.append(tlsRow('TLS out', secure.sent,
                      'the TLS records that crossed while this exchange was sent' + CROSSED));
  }
  return out;
}

// -- the log: records by id, updated in place, filtered, paused, cleared -------------

const store = new Map();     // id -> record, the newest STORE of them
const entries = new Map();   // id -> its element in the log
const waiting = new Map();   // records that came while paused
let paused = false;
let clearedUpTo = 0;         // Clear hides the records up to here (local to this page)
let pageRecord = null;       // the id of this page's own GET / (the browser's)
let anchor = null;           // this load's first own record, to find that GET / by

function isOwn(record) {
  return record.kind === 'http' && (record.id === pageRecord
    || (record.request && OWN_MARK.test(record.request.target)));
}

function isError(record) {
  if (record.kind === 'blocks') {
    return typeof record.ended === 'string' ? record.ended !== 'ended by the empty block'
                                            : !['whole', 'open'].includes(record.ended.kind);
  }
  const kind = ended(record).kind;
  const status = record.response && record.response.status;
  return !['whole', 'open'].includes(kind) || status === null || status >= 400;
}

const path = (record) => (record.request ? record.request.target.split('?')[0] : '');
const KINDS = {
  all: () => true,
  uploads: (record) => path(record).startsWith('/uploads/')
    || path(record).startsWith(PARTIALS),
  echo: (record) => path(record) === '/echo',
  blocks: (record) => record.kind === 'blocks',
  errors: isError,
};

function wanted(record) {
  return record.id > clearedUpTo && ($('own').checked || !isOwn(record))
    && KINDS[$('filter').value](record);
}

// Show the newest KEEP records that pass the filters, hide the rest.
function refilter() {
  let shown = 0;
  for (const entry of $('records').children) {
    const record = store.get(Number(entry.dataset.id));
    const show = record !== undefined && shown < KEEP && wanted(record);
    entry.hidden = !show;
    if (show) shown += 1;
  }
  $('log-state').textContent = shown ? '' : 'nothing to show (see the filters above)';
}

function entryFor(record) {
  const entry = document.createElement('div');
  entry.className = 'record';
  if (isOpen(record)) entry.classList.add('open');
  else if (isError(record)) entry.classList.add('cut');
  entry.dataset.id = record.id;
  const words = document.createElement('div');
  words.className = 'words';
  const step = record.kind === 'http' && record.request ? partialStep(record) : null;
  words.textContent = `#${record.id} ${record.peer}: ${record.words}`
    + (isOpen(record) ? ' (in progress)' : '') + (step ? ` · ${step.words}` : '');
  entry.append(words, drawRecord(record));
  return entry;
}

// A new record, or a newer version of one (the same id): drawn, or replaced in place.
function take(record) {
  if (paused) {
    waiting.set(record.id, record);
    $('pause').textContent = `Resume (${waiting.size} waiting)`;
    return;
  }
  store.set(record.id, record);
  const entry = entryFor(record);
  const old = entries.get(record.id);
  if (old) old.replaceWith(entry);
  else $('records').prepend(entry);
  entries.set(record.id, entry);
  while (store.size > STORE) {
    const oldest = store.keys().next().value;
    store.delete(oldest);
    const gone = entries.get(oldest);
    if (gone) gone.remove();
    entries.delete(oldest);
  }
  showIdeas(record);
  refilter();
}

function showIdeas(record) {
  if (record.kind === 'blocks') $('idea-blocks').replaceChildren(drawRecord(record));
  else if (path(record) === '/echo') $('idea-body').replaceChildren(drawRecord(record));
  if (record.request && record.request.target.includes(`${OWN}=`) && anchor === null) {
    anchor = record;
  }
  if (record.id === pageRecord) drawPageRecord();
  else if (pageRecord === null && anchor !== null) findPageRecord();
}

// This page's own request is the browser's GET / that loaded it: the latest GET / before
// this load's first marked request, from the same connection if the record shows one
// (the same peer), else from the same address.  Times, not ids, order them: with
// --workers each process numbers its records in a series of its own.
// The paths this page was loaded by: / (or /_minihttp/ when installed), and its index.html.
const ownPaths = [location.pathname, location.pathname.replace(/\/?$/, '/') + 'index.html'];

function findPageRecord() {
  const host = anchor.peer.replace(/:\d+$/, '');
  let best = null;
  let rank = -1;
  for (const record of store.values()) {
    const request = record.request;
    if (record.kind !== 'http' || !request || request.method !== 'GET'
        || !ownPaths.includes(request.target) || record.time > anchor.time) continue;
    const r = record.peer === anchor.peer ? 2 : record.peer.startsWith(host + ':') ? 1 : 0;
    if (r > rank || (r === rank && record.time >= best.time)) { best = record; rank = r; }
  }
  if (best !== null) {
    pageRecord = best.id;
    drawPageRecord();
    refilter();
  }
}

function drawPageRecord() {
  const record = store.get(pageRecord);
  const head = $('idea-head');
  head.dataset.id = record.id;
  head.replaceChildren(drawRecord(record));
}

// The live feed: the server holds it open in its event loop.  A record comes as a
// `record` event, or as a plain message; a newer version of one as an `update` event.
function follow() {
  const feed = new EventSource(own('/_framing/stream'));
  const read = (event) => take(JSON.parse(event.data));
  feed.addEventListener('record', read);
  feed.addEventListener('update', read);
  feed.onmessage = read;
  feed.addEventListener('dropped', (event) => {
    $('feed-state').textContent = `(${JSON.parse(event.data).dropped} records went by too fast to show)`;
  });
  feed.onopen = () => { $('feed-state').textContent = ''; };
  feed.onerror = () => { $('feed-state').textContent = '(the live feed is reconnecting…)'; };
}

$('filter').addEventListener('change', refilter);
$('own').addEventListener('change', refilter);
$('pause').addEventListener('click', () => {
  paused = !paused;
  $('pause').setAttribute('aria-pressed', String(paused));
  $('pause').textContent = paused ? 'Resume' : 'Pause';
  if (!paused) {
    const records = [...waiting.values()];
    waiting.clear();
    records.forEach(take);
  }
  announce('log-said', paused ? 'The log is paused: new records wait.' : 'The log follows again.');
});
$('clear').addEventListener('click', () => {
  clearedUpTo = Math.max(clearedUpTo, ...store.keys(), ...waiting.keys());
  refilter();
  announce('log-said', 'Log cleared on this page (the server keeps its records).');
});

async function fillCommands() {
  let blockPort = null;
  try {
    blockPort = (await (await fetch(own('/_framing?after=999999999'))).json()).block_port;
  } catch (error) { /* the commands keep their placeholders */ }
  // Served over TLS, both ports speak it: the commands say https:// and trust the
  // server's certificate (cert.pem, as the README makes it), or they would all fail.
  const tls = location.protocol === 'https:';
  const blockHost = blockPort === null ? '(the block server is off)'
    : `${tls ? '--tls --cafile cert.pem ' : ''}-p ${blockPort} ${location.hostname}`;
  for (const id of ['commands', 'chunked-command']) {
    let text = $(id).textContent;
    if (tls) text = text.replaceAll('curl ', 'curl --cacert cert.pem ')
      .replaceAll('http://HOST', 'https://HOST');
    $(id).textContent = text.replaceAll('BLOCKHOST', blockHost).replaceAll('HOST', location.host);
  }
}

// -- echo: the body comes back, with how the server read it ---------------------------

$('send').addEventListener('click', async () => {
  const echo = $('echo');
  echo.replaceChildren(box('sending…', 'label'));
  try {
    const response = await fetch('/echo', {method: 'POST', body: $('text').value,
                                           headers: {'Content-Type': 'text/plain; charset=utf-8'}});
    const text = await response.text();
    if (!response.ok) throw new Error(problem(response.status, text));
    const framing = document.createElement('p');
    framing.className = 'words';
    framing.append('The server read it as ');
    const code = document.createElement('code');
    code.textContent = `X-Request-Framing: ${response.headers.get('X-Request-Framing')}`;
    framing.append(code, '; it sent back:');
    const body = document.createElement('pre');
    body.className = 'echoed';
    body.textContent = text.length > 2000 ? text.slice(0, 2000) + '…' : text;
    echo.replaceChildren(framing, body);
  } catch (error) {
    const words = error instanceof TypeError ? problem(0, '') : error.message;
    const said = document.createElement('p');
    said.className = 'error';
    said.textContent = `The echo failed: ${words}`;
    echo.replaceChildren(said);
  }
});

// -- uploads: resumable (draft-ietf-httpbis-resumable-upload), into folders -----------

const INTEROP = '9';            // Upload-Draft-Interop-Version this page speaks
const PARTIAL = 'application/partial-upload';
const RETRY_FOR = 120000;       // ms an upload keeps retrying with no byte moving
const BACKOFF = 500;            // ms before the first retry, doubled each time after,
const BACKOFF_MAX = 8000;       // up to this
const PARALLEL = 3;             // uploads sent at once: a folder's files wait their turn
const MAX_WALK = 32;            // folder depth a dropped folder is walked to (the server's)

function authorization() {
  const token = $('token').value.trim();
  return token ? {'Authorization': `Bearer ${token}`} : {};
}

// The URL of a name under /uploads/ ('a/b/c.txt', or a folder's 'a/b/'): each segment
// encoded, the slashes kept.
const uploadURL = (name) => '/uploads/' + name.split('/').map(encodeURIComponent).join('/');

// The upload resources this page made: their path (/_uploads/<ID>) -> the name they
// become, so that the log can say which of its PATCH and HEAD requests are this page's.
const resources = new Map();

const aborted = () => new DOMException('cancelled', 'AbortError');
const isAbort = (error) => error instanceof DOMException && error.name === 'AbortError';

// A stop that the page does not retry: the server's answer, in its words.
class Refused extends Error {
  constructor(xhr) {
    super(problem(xhr.status, xhr.responseText));
    this.status = xhr.status;
    this.etag = xhr.getResponseHeader('ETag');
  }
}

// Transfers wait here for one of PARALLEL places (a folder of 500 files is not 500
// connections at once; the browser would queue them anyway, with no Cancel).
const queued = [];
let sending = 0;

function next() {
  while (sending < PARALLEL && queued.length) {
    const transfer = queued.shift();
    sending += 1;
    transfer.run().finally(() => { sending -= 1; next(); });
  }
}

// The list is read again after uploads end: at once for one, at most once a RELIST
// while a folder's files keep ending (never once per file), and once after the last.
const RELIST = 1000;
let relist = null;
let listedAt = 0;
function listSoon() {
  if (relist !== null) return;          // the one pending comes after this end too
  relist = setTimeout(() => {
    relist = null;
    listedAt = Date.now();
    listStored();
  }, Math.max(150, listedAt + RELIST - Date.now()));
}

// The files sent since the queue was last empty: with more than one, the status line
// counts them ("37 of 200 stored") rather than saying each file's every step; each
// file's line still says its own.
const batch = {total: 0, stored: 0, cancelled: 0, failed: 0};

function enqueue(transfer) {
  if (sending === 0 && queued.length === 0) {
    Object.assign(batch, {total: 0, stored: 0, cancelled: 0, failed: 0});
  }
  batch.total += 1;
  queued.push(transfer);
  next();
}

function countBatch() {
  const ended = batch.stored + batch.cancelled + batch.failed;
  const parts = [`${batch.stored} of ${batch.total} stored`];
  if (batch.cancelled) parts.push(`${batch.cancelled} cancelled`);
  if (batch.failed) parts.push(`${batch.failed} not stored (their lines say why)`);
  announce('uploads-said', parts.join(', ') + (ended < batch.total ? '…' : '.'),
           batch.failed > 0);
}

// One file on its way to ``name`` (a path under /uploads/): a line with a bar, a
// Cancel and what happened, and the steps of the resumable protocol.  It never
// replaces a file by accident: it is sent with If-None-Match: *, or, once the person
// chose Replace, with If-Match: ``replacing`` (the ETag of the file they were told of).
class Transfer {
  constructor(file, name, replacing = null) {
    this.file = file;
    this.name = name;
    this.condition = replacing === null ? {'If-None-Match': '*'} : {'If-Match': replacing};
    this.url = null;            // the upload resource, once made
    this.xhr = null;            // the request under way
    this.pause = null;          // the wait before a retry: its cancel
    this.creating = false;
    this.cancelled = false;
    this.resumedAt = null;
    this.line = document.createElement('p');
    this.bar = document.createElement('progress');
    this.bar.max = file.size || 1;
    this.bar.value = 0;
    this.bar.setAttribute('aria-label', `Upload of ${name}`);
    this.status = document.createElement('span');
    this.status.textContent = 'waiting for its turn';
    this.cancel = button('Cancel', `Cancel upload of ${name}`, () => this.stop());
    this.line.append(`${name} `, this.bar, ' ', this.cancel, ' ', this.status);
    $('transfers').prepend(this.line);
  }

  say(words, isError = false) {
    this.status.className = isError ? 'error' : '';
    this.status.textContent = words;
    if (batch.total <= 1) announce('uploads-said', `${this.name}: ${words}`, isError);
  }

  // Ends the line: no Cancel, and no bar unless the file arrived whole.
  finish(words, isError, whole = false) {
    if (document.activeElement === this.cancel) $('choose').focus();   // not lost with it
    this.cancel.remove();
    if (!whole) this.bar.remove();
    this.say(words, isError);
    batch[whole ? 'stored' : this.cancelled ? 'cancelled' : 'failed'] += 1;
    if (batch.total > 1) countBatch();
    listSoon();
  }

  // One request by XMLHttpRequest (fetch says nothing of an upload's progress):
  // resolves to it once answered, whatever the status; rejects with a TypeError
  // when the connection failed, with an AbortError when cancelled.
  send(method, url, headers, body = null, progress = null) {
    return new Promise((resolve, reject) => {
      if (this.cancelled && !this.creating) {
        reject(aborted());
        return;
      }
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      if (progress) xhr.upload.onprogress = (event) => progress(event.loaded);
      xhr.onload = () => resolve(xhr);
      xhr.onerror = () => reject(new TypeError('the connection failed'));
      xhr.onabort = () => reject(aborted());
      this.xhr = xhr;
      xhr.send(body);
    });
  }

  // The request, or null when the connection failed (to be retried).
  async attempt(...request) {
    try {
      return await this.send(...request);
    } catch (error) {
      if (error instanceof TypeError) return null;
      throw error;
    }
  }

  wait(ms) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      this.pause = () => { clearTimeout(timer); reject(aborted()); };
    });
  }

  async run() {
    if (this.cancelled) return;
    try {
      const stored = await this.upload();
      this.bar.value = this.bar.max;
      const resumed = this.resumedAt === null ? ''
        : `, resumed at ${human(this.resumedAt)} of ${human(this.file.size)}`;
      this.finish(`${stored}${resumed}`, false, true);
    } catch (error) {
      if (isAbort(error) || this.cancelled) await this.discard();
      else if (error instanceof Refused && error.status === 412) this.refusedAsThere(error);
      else this.finish(`not stored: ${error instanceof TypeError ? problem(0, '')
                                                                : error.message}`, true);
    }
  }

  // 412: a file of that name is there (or changed since Replace was chosen).  Said,
  // and left as it is; Replace is offered, and replaces only the version it names.
  refusedAsThere(error) {
    const again = this.condition['If-Match'] !== undefined;
    this.finish(again ? 'not stored: the file there changed since you chose Replace (412); '
                        + 'it was left as it is'
                      : 'not stored: a file of this name is already there (412); it was left '
                        + 'as it is', true);
    if (error.etag === null) return;
    const replace = button('Replace', `Replace ${this.name} with the file you chose`, () => {
      replace.remove();
      enqueue(new Transfer(this.file, this.name, error.etag));
    });
    this.status.before(replace, ' ');
  }

  // Creation (the draft's careful way: no content, so no 104 to wait for, which
  // fetch and XMLHttpRequest never show), then appends until the server holds it all;
  // what to say of the file stored.
  async upload() {
    const {file} = this;
    this.say('sending');
    this.creating = true;
    let answer;
    try {
      answer = await this.send('PUT', uploadURL(this.name), {
        'Upload-Complete': '?0', 'Upload-Draft-Interop-Version': INTEROP,
        'Upload-Length': String(file.size), ...this.condition, ...authorization()});
    } catch (error) {
      throw error instanceof TypeError ? new Error(problem(0, '')) : error;
    } finally {
      this.creating = false;
    }
    const location = answer.getResponseHeader('Location');
    if (answer.status === 201 && location && location.startsWith('/_uploads/')) {
      this.url = location;
      resources.set(location, this.name);
    }
    if (this.cancelled) throw aborted();        // cancelled while it was being made
    if (answer.status >= 300) throw new Refused(answer);
    if (this.url === null) return this.whole();   // a server that does not resume
    return this.append(Number(answer.getResponseHeader('Upload-Offset')) || 0);
  }

  // PATCH from ``offset``; after a cut, a 409 or a 502-504, HEAD for the offset the
  // server holds and PATCH again from there.  A person would rather wait out a server
  // restarting or a Wi-Fi coming back than start again: the page keeps trying, the
  // wait doubling up to BACKOFF_MAX, until RETRY_FOR has passed with no byte moving
  // (Cancel stays there all along).
  async append(offset) {
    const {file} = this;
    let known = true;           // whether ``offset`` is the server's
    let delay = BACKOFF;
    let since = Date.now();     // when a byte last moved
    for (;;) {
      let reached = true;       // whether the server answered the last request
      if (known) {
        const start = offset;
        const answer = await this.attempt('PATCH', this.url, {
          'Content-Type': PARTIAL, 'Upload-Offset': String(start), 'Upload-Complete': '?1',
          'Upload-Draft-Interop-Version': INTEROP, ...authorization()},
          file.slice(start), (loaded) => { this.bar.value = start + loaded; });
        if (answer !== null) {
          if (answer.status < 300) return `stored (${answer.status})`;
          if (!retried(answer.status)) throw new Refused(answer);
        }
        reached = answer !== null;
      }
      if (Date.now() - since + delay > RETRY_FOR) {
        throw new Error(`the server was unreachable for ${RETRY_FOR / 60000} minutes with no `
                        + `byte moving (it holds ${human(offset)} of ${human(file.size)})`);
      }
      this.say(known && reached
        ? `interrupted at ${human(this.bar.value)}: asking the server where to resume, `
          + `in ${delay / 1000} s`
        : `server unreachable, retrying in ${delay / 1000} s (it held ${human(offset)} of `
          + `${human(file.size)})`);
      await this.wait(delay);
      delay = Math.min(delay * 2, BACKOFF_MAX);
      const state = await this.attempt('HEAD', this.url,
                                       {'Upload-Draft-Interop-Version': INTEROP});
      known = state !== null && state.status < 300;
      if (state !== null && !known && !retried(state.status)) {
        throw new Error(`${problem(state.status, 'the server no longer holds this upload '
                                   + '(cancelled, or expired)')}`);
      }
      if (!known) continue;
      // Complete: the append's answer was lost on the way, not its bytes.
      if (state.getResponseHeader('Upload-Complete') === '?1') return 'stored (HEAD says complete)';
      const held = Number(state.getResponseHeader('Upload-Offset'));
      if (held > offset) {           // bytes moved: the wait starts again
        since = Date.now();
        delay = BACKOFF;
      }
      offset = held;
      this.resumedAt = held;
      this.line.dataset.resumedAt = String(held);
      this.bar.value = held;
      this.say(`resumed at ${human(held)} of ${human(file.size)}`);
    }
  }

  // The whole file in one PUT, for a server that made no upload resource.
  async whole() {
    const answer = await this.send('PUT', uploadURL(this.name),
                                   {...this.condition, ...authorization()}, this.file,
                                   (loaded) => { this.bar.value = loaded; });
    if (answer.status >= 300) throw new Refused(answer);
    return `stored (${answer.status})`;
  }

  // Cancel: the request under way stops; the upload resource, if made, is deleted.
  stop() {
    if (this.cancelled) return;
    this.cancelled = true;
    const waiting = queued.indexOf(this);
    if (waiting >= 0) {
      queued.splice(waiting, 1);
      this.finish('cancelled before it began', false);
      return;
    }
    this.cancel.disabled = true;
    this.say('cancelling…');
    // A creation is left to finish: its answer names the resource to delete.
    if (this.xhr && !this.creating) this.xhr.abort();
    if (this.pause) this.pause();
  }

  async discard() {
    if (this.url === null) {
      this.finish('cancelled: the server keeps nothing of it', false);
      return;
    }
    try {
      const answer = await fetch(this.url, {method: 'DELETE', headers: authorization()});
      if (answer.ok || answer.status === 404) {
        this.finish('cancelled: the server keeps nothing of it', false);
      } else {
        this.finish('cancelled, but the upload was not deleted: '
                    + problem(answer.status, await answer.text()), true);
      }
    } catch (error) {
      this.finish(`cancelled, but the upload was not deleted: ${problem(0, '')}`, true);
    }
  }
}

// The answers after which an append is tried again (from the offset HEAD says): 409
// (not at the server's offset, or another append held it), a gateway's or a busy
// server's; any other 4xx or 5xx is the server's last word.
const retried = (status) => status === 409 || (status >= 502 && status <= 504);

// Each file to ``folder`` + its path: a picked folder's files by webkitRelativePath,
// others by their name.
function upload(file, name) {
  enqueue(new Transfer(file, name));
}

function button(text, label, onclick) {
  const made = document.createElement('button');
  made.type = 'button';
  made.textContent = text;
  made.setAttribute('aria-label', label);
  made.onclick = onclick;
  return made;
}

// A write of the uploads section, with the token: whether it worked; when not, said
// in the section's status line as "<notDone>: <the server's reason>".
async function write(method, url, headers, notDone) {
  try {
    const answer = await fetch(url, {method, headers: {...headers, ...authorization()}});
    if (answer.ok) return true;
    announce('uploads-said', `${notDone}: ${problem(answer.status, await answer.text())}`, true);
  } catch (error) {
    announce('uploads-said', `${notDone}: ${problem(0, '')}`, true);
  }
  return false;
}

// Delete asks first, in the row itself: "Delete README.md?" Yes / Keep.  A folder's
// name ends with "/": it is deleted only when empty (409 otherwise, said as the
// server says it).
function deleteButton(name, href, cell) {
  const ask = () => {
    const question = document.createElement('span');
    question.textContent = `Delete ${name}? `;
    const keep = button('Keep', `Keep ${name}`, () => {
      cell.replaceChildren(deleteButton(name, href, cell));
      cell.firstChild.focus();
    });
    const yes = button('Yes, delete', `Yes, delete ${name}`, async () => {
      if (await write('DELETE', href, {}, `${name} was not deleted`)) {
        announce('uploads-said', `Deleted ${name}.`);
      }
      listStored();
    });
    cell.replaceChildren(question, yes, ' ', keep);
    keep.focus();
  };
  return button('Delete', `Delete ${name}`, ask);
}

// -- folders: the one shown is in the address (#folder=a/b/), so Back goes up -----------

// Why ``name`` (a path under /uploads/, a folder's ending in "/") cannot be one, or
// null: each segment as the server checks it (uploads.check_segment), and above all
// never "." or "..", which the URL parser resolves (even as %2E%2E), so that
// /uploads/../ would be the site's root, not a folder of the uploads.
function badName(name) {
  const segments = name.replace(/\/$/, '').split('/');
  if (segments.some((segment) => segment === '')) return 'it has an empty segment';
  if (segments.some((segment) => segment.startsWith('.'))) {
    return 'a segment starts with a dot (".." would leave the uploads)';
  }
  if (/[\\\x00-\x1f\x7f]/.test(name)) return 'it holds a backslash or a control character';
  return null;
}

// The folder the address names (#folder=a%2Fb%2F: 'a/b/'), '' for the top one;
// null when the address names none the uploads could hold (a link crafted with
// #folder=..%2F, or a broken %-escape).
function addressedFolder() {
  const match = /^#folder=(.*)$/.exec(location.hash);
  if (!match || match[1] === '') return '';
  let name;
  try {
    name = decodeURIComponent(match[1]);
  } catch (error) {
    return null;
  }
  name = name.endsWith('/') ? name : name + '/';
  return badName(name) === null ? name : null;
}

// The folder shown, which uploads and New folder go into.
const shownFolder = () => addressedFolder() || '';

const folderHash = (folder) => '#folder=' + encodeURIComponent(folder);

function link(text, href, label) {
  const made = document.createElement('a');
  made.href = href;
  made.textContent = text;
  if (label) made.setAttribute('aria-label', label);
  return made;
}

// Where the list is: uploads / a / b, each a link up; and the folder's downloads, made
// by the server while they are sent (chunked: their length is known only at the end).
function drawWhere(folder) {
  const parts = folder ? folder.slice(0, -1).split('/') : [];
  const trail = [link('uploads', folderHash(''), 'uploads (the top folder)')];
  parts.forEach((part, i) => {
    trail.push(' / ', link(part, folderHash(parts.slice(0, i + 1).join('/') + '/')));
  });
  trail[trail.length - 1].setAttribute('aria-current', 'location');
  $('where').replaceChildren('Folder: ', ...trail);
  const title = folder ? parts[parts.length - 1] : 'uploads';
  const archive = (kind) => link(kind, uploadURL(folder) + `?archive=${kind}`,
                                 `Download ${title} as ${kind}`);
  $('archives').replaceChildren(`Download ${title}/ as one file, made as it is sent: `,
                                archive('zip'), ' ', archive('tar'));
}

function folderRow(folder, entry) {
  const tr = document.createElement('tr');
  const [name, size, actions] = [0, 1, 2].map(() => document.createElement('td'));
  const path = folder + entry.name + '/';
  name.append(link(entry.name + '/', folderHash(path), `Open folder ${entry.name}`));
  size.append('folder');
  actions.append(deleteButton(entry.name + '/', uploadURL(path), actions));
  tr.append(name, size, actions);
  tr.className = 'folder';
  return tr;
}

function fileRow(folder, file) {
  const tr = document.createElement('tr');
  const anchor = link(file.name, uploadURL(folder + file.name));
  anchor.download = file.name;
  const [name, size, actions] = [0, 1, 2].map(() => document.createElement('td'));
  name.append(anchor);
  size.append(String(file.bytes));
  actions.append(deleteButton(file.name, anchor.href, actions));
  tr.append(name, size, actions);
  return tr;
}

let listings = 0;        // listStored's calls: only the latest one ends the busy state
async function listStored() {
  if (addressedFolder() === null) {
    // Said, and dropped from the address (no history entry), so that nothing below
    // reads it: the top folder is shown instead.
    announce('uploads-said', 'The address named no folder of the uploads: showing the '
             + 'top folder.', true);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const folder = shownFolder();
  const body = $('stored').tBodies[0];
  // A keyboard's place among the rows or the breadcrumb (the link just followed, the
  // Delete just answered) goes with them when they are drawn again: it is put on the
  // folder now shown, not dropped to the top of the page.
  const focused = ['stored', 'where'].some((id) => $(id).contains(document.activeElement));
  drawWhere(folder);
  if (focused) $('where').querySelector('[aria-current]').focus();
  // Busy while its rows are being read again: a screen reader waits for the new ones
  // (and so can a test, rather than press a button about to be replaced).
  const listing = (listings += 1);
  $('stored').setAttribute('aria-busy', 'true');
  try {
    const response = await fetch(own(uploadURL(folder)), {headers: {'Accept': 'application/json'}});
    if (!response.ok) throw new Error(problem(response.status, await response.text()));
    const listing = await response.json();
    if (shownFolder() !== folder) return;        // another folder was opened meanwhile
    const rows = [];
    if (folder) {
      const up = document.createElement('tr');
      const cell = document.createElement('td');
      cell.colSpan = 3;
      const parent = folder.slice(0, -1).split('/').slice(0, -1).join('/');
      cell.append(link('..', folderHash(parent ? parent + '/' : ''), 'Up one folder'));
      up.append(cell);
      rows.push(up);
    }
    rows.push(...listing.folders.map((entry) => folderRow(folder, entry)),
              ...listing.files.map((file) => fileRow(folder, file)));
    body.replaceChildren(...rows);
  } catch (error) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 3;
    td.className = 'error';
    td.textContent = `Cannot list ${folder ? folder : 'the uploads'}: ${error instanceof TypeError
      ? problem(0, '') : error.message}`;
    if (folder) td.append(' ', link('back to the top', folderHash('')));
    tr.append(td);
    body.replaceChildren(tr);
  } finally {
    if (listing === listings) $('stored').setAttribute('aria-busy', 'false');
  }
}

// New folder: PUT <folder>/ with If-None-Match: *, so that one already there is said
// (412), never taken for made.
async function makeFolder() {
  const typed = $('folder-name').value.trim().replace(/^\/+|\/+$/g, '');
  if (!typed) {
    announce('uploads-said', 'Type the new folder\'s name first.', true);
    $('folder-name').focus();
    return;
  }
  const name = shownFolder() + typed + '/';
  const bad = badName(name);
  if (bad) {
    announce('uploads-said', `${typed} cannot be a folder's name: ${bad}.`, true);
    $('folder-name').focus();
    return;
  }
  if (await write('PUT', uploadURL(name), {'If-None-Match': '*'}, `${name} was not made`)) {
    announce('uploads-said', `Made the folder ${name}.`);
    $('folder-name').value = '';
  }
  listStored();
}

// A dropped folder, walked: each file to ``into`` + its path in what was dropped, and
// each empty folder made (a folder's structure is its folders too).
async function walk(entry, into, depth = 0) {
  const path = into + entry.fullPath.replace(/^\/+/, '');
  if (entry.isFile) {
    upload(await new Promise((resolve, reject) => entry.file(resolve, reject)), path);
    return;
  }
  if (depth >= MAX_WALK) {
    announce('uploads-said', `${path}/ is deeper than ${MAX_WALK} folders: not sent.`, true);
    return;
  }
  const reader = entry.createReader();
  let count = 0;
  for (;;) {            // readEntries gives a folder in batches, then an empty one
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    count += batch.length;
    for (const child of batch) await walk(child, into, depth + 1);
  }
  if (count === 0) {
    await write('PUT', uploadURL(path + '/'), {}, `${path}/ was not made`);
    listSoon();
  }
}

$('choose').addEventListener('click', () => $('pick').click());
$('choose-folder').addEventListener('click', () => $('pick-folder').click());
$('pick').addEventListener('change', () => {
  const folder = shownFolder();
  for (const file of $('pick').files) upload(file, folder + file.name);
  // Emptied, so that choosing the same file again (after a refusal, with the token
  // now given) is a change too: else the browser sees the same choice and says nothing.
  $('pick').value = '';
});
$('pick-folder').addEventListener('change', () => {
  const folder = shownFolder();
  for (const file of $('pick-folder').files) {
    upload(file, folder + (file.webkitRelativePath || file.name));
  }
  $('pick-folder').value = '';
});
$('make-folder').addEventListener('click', makeFolder);
$('folder-name').addEventListener('keydown', (event) => {
  if (event.key === 'Enter') makeFolder();
});
window.addEventListener('hashchange', listStored);
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  const folder = shownFolder();
  // Taken now: the drop's items are readable only while its event is handled.
  const entries = [...event.dataTransfer.items]
    .map((item) => (item.kind === 'file' && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (!entries.length) {
    for (const file of event.dataTransfer.files) upload(file, folder + file.name);
    return;
  }
  for (const entry of entries) {
    walk(entry, folder).catch((error) => announce(
      'uploads-said', `${entry.name} could not be read: ${error.message || error}`, true));
  }
});

fillCommands();
listStored();
follow();
