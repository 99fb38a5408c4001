// The page at /: images chosen or dropped are sent to /v1/detect of this origin, one at a
// time, and drawn with their boxes, class names, timings and the JSON answer.
"use strict";

const MEDIA_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp"];
const GOLDEN_RATIO_CONJUGATE = 0.618033988749895;
const MIN_DRAWN_SIDE = 320; // pixels: a smaller image is drawn enlarged
const $ = (selector, root = document) => root.querySelector(selector);
let model = null;
let queue = Promise.resolve();

// The colour of a class, as the package's pictures draw it (visualize.class_color): hues
// spread by the golden ratio, saturation 0.85, value 0.95.
function classColor(label) {
  const h = ((label * GOLDEN_RATIO_CONJUGATE) % 1) * 6, s = 0.85, v = 0.95;
  const i = Math.floor(h), f = h - i;
  const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return [r, g, b].map((c) => Math.trunc(c * 255));
}

function rgb(color) {
  return `rgb(${color.join(",")})`;
}

function authHeaders() {
  const token = sessionStorage.getItem("fcos-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorOf(response) {
  try {
    return (await response.json()).error || response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const response = await fetch("v1/model", { headers: authHeaders() });
  if (response.status === 401) {
    $("#token-field").hidden = false;
    $("#model").textContent = "this server needs its token: enter it, then choose images";
    return;
  }
  if (!response.ok) {
    $("#model").textContent = `the model's description failed: ${await errorOf(response)}`;
    return;
  }
  model = await response.json();
  const names = model.classes.map((c) => c.name).join(", ");
  $("#model").textContent = `${model.config} on ${model.engine} (${model.precision}); ` +
    `${model.classes.length} classes: ${names}`;
  if ($("#score").value === "") $("#score").value = model.defaults.score_threshold;
  if ($("#count").value === "") $("#count").value = model.defaults.max_detections;
  document.body.dataset.model = "loaded";
}

function detectUrl() {
  const query = new URLSearchParams();
  if ($("#score").value !== "") query.set("score_threshold", $("#score").value);
  if ($("#count").value !== "") query.set("max_detections", $("#count").value);
  return `v1/detect?${query}`;
}

function newCard(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = file.name;
  $("#results").prepend(card);
  return card;
}

function fail(card, message) {
  card.dataset.state = "error";
  $(".status", card).textContent = message;
}

async function detectFile(file) {
  const card = newCard(file);
  if (!MEDIA_TYPES.includes(file.type)) {
    // the server judges by the bytes; sent as they are, it says what is wrong
    $(".status", card).textContent = `sending (${file.type || "unknown type"})…`;
  }
  card.dataset.state = "sending";
  let response;
  try {
    response = await fetch(detectUrl(), {
      method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream", ...authHeaders() },
    });
  } catch (error) {
    fail(card, `the server did not answer: ${error.message}`);
    return;
  }
  if (!response.ok) {
    fail(card, `${response.status}: ${await errorOf(response)}`);
    return;
  }
  const answer = await response.json();
  await draw(card, file, answer);
  $(".status", card).textContent =
    `${answer.detections.length} detections, ${answer.image.width} x ${answer.image.height}`;
  $(".json", card).textContent = JSON.stringify(answer, null, 2);
  const timings = $(".timings", card);
  for (const [step, ms] of Object.entries(answer.timings_ms)) {
    timings.insertRow().append(...[step, `${ms.toFixed(1)} ms`].map((text) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      return cell;
    }));
  }
  card.dataset.state = "done";
}

// The image as the server saw it (EXIF orientation applied, as the browser applies it too),
// enlarged a whole number of times when small; boxes are drawn at whole pixels.
async function draw(card, file, answer) {
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  await image.decode();
  const { width, height } = answer.image;
  const scale = Math.max(1, Math.floor(MIN_DRAWN_SIDE / Math.max(width, height)));
  const canvas = $("canvas", card);
  canvas.width = width * scale;
  canvas.height = height * scale;
  canvas.dataset.scale = scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(url);
  const line = Math.max(2, 2 * Math.round(Math.min(canvas.width, canvas.height) / 400));
  const fontSize = Math.max(12, Math.round(Math.min(canvas.width, canvas.height) / 40));
  context.font = `${fontSize}px sans-serif`;
  context.lineWidth = line;
  const list = $(".detections", card);
  for (const found of answer.detections) {
    const color = classColor(found.label);
    const [x1, y1, x2, y2] = found.bbox.map((v) => Math.round(v * scale));
    context.strokeStyle = rgb(color);
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${found.category_name} ${found.score.toFixed(2)}`;
    // the label above the box, moved in where it would leave the picture
    const width = context.measureText(text).width + 4;
    const left = Math.max(Math.min(x1, canvas.width - width), 0);
    const top = Math.max(y1 - fontSize - 4, 0);
    context.fillStyle = rgb(color);
    context.fillRect(left, top, width, fontSize + 4);
    context.fillStyle = "#fff";
    context.fillText(text, left + 2, top + fontSize);
    list.append(listItem(found, color, found.bbox.map(Math.round), text));
  }
}

function listItem(found, color, box, text) {
  const item = document.createElement("li");
  item.className = "detection";
  item.dataset.label = found.label;
  item.dataset.name = found.category_name;
  item.dataset.box = box.join(",");
  item.dataset.color = color.join(",");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = rgb(color);
  item.append(swatch, `${text} at (${box.join(", ")})`);
  return item;
}

function enqueue(files) {
  $("#message").textContent = "";
  for (const file of files) {
    queue = queue.then(() => detectFile(file)).catch((error) => {
      $("#message").textContent = error.message;
    });
  }
}

function setUp() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (event) => {
    enqueue([...event.target.files]);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    enqueue([...event.dataTransfer.files]);
  });
  $("#settings").addEventListener("submit", (event) => event.preventDefault());
  $("#token").addEventListener("change", (event) => {
    sessionStorage.setItem("fcos-token", event.target.value);
    loadModel();
  });
  loadModel();
}

setUp();
