// The review page of the inspection service: pick a category, drop or choose an image,
// see the verdict, the score against the threshold and the heatmap overlay. Plain
// JavaScript against the service's own API; nothing is loaded from elsewhere.
"use strict";

const HISTORY_MAX = 20;
const history = [];  // the last results since the page was opened, newest first
let manifest = null;
// As fedpatch_app.metrics.thresholds.MIN_CALIBRATION_SCORES.
const MIN_CALIBRATION_SCORES = 20;

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem("fedpatch-token") || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: "the service answered " + response.status + " without JSON" };
  }
  if (response.status === 401) $("token-box").hidden = false;
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function fmt(value, digits = 4) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function thresholdText(name) {
  const image = ((manifest.categories[name] || {}).thresholds || {}).image;
  if (!image) return "no calibrated threshold: verdicts are UNCALIBRATED";
  const text = "image threshold " + fmt(image.raw) + " (target false-reject rate " +
    image.target_rate + ", " + image.calibration_images + " calibration images)";
  if (image.calibration_images >= MIN_CALIBRATION_SCORES) return text;
  return text + ". WARNING: it rests on fewer than " + MIN_CALIBRATION_SCORES +
    " scores: the false-reject rate on new good parts is barely known";
}

function trainedOn() {
  return (manifest.provenance || {}).training_data || null;
}

function trainedOnText(name) {
  const data = trainedOn();
  if (!data) return "training data not recorded in this model";
  const entry = (data.categories || {})[name] || {};
  const parts = [data.dataset];
  if (entry.layout) parts.push(entry.layout + " layout");
  if (entry.train_images !== undefined) parts.push(entry.train_images + " training images");
  if (entry.calibration_images !== undefined) {
    parts.push(entry.calibration_images + " calibration images");
  }
  return "trained on " + parts.join(", ");
}

function showDataBanner() {
  const data = trainedOn();
  const banner = $("data-banner");
  banner.hidden = !(data && data.synthetic);
  if (!banner.hidden) {
    banner.textContent = "SYNTHETIC TRAINING DATA: this model was trained on " + data.dataset +
      ", not on images of real parts. Its verdicts say nothing about your parts.";
  }
}

async function loadModel() {
  try {
    manifest = await api("/v1/model");
  } catch (err) {
    $("model-info").textContent = "model not available";
    showError(err.message);
    return;
  }
  showError("");
  const prov = manifest.provenance || {};
  $("model-info").textContent = "model " + manifest.fingerprint + " from run " +
    (prov.run_name || "?") + " (" + (prov.run_kind || "?") + ")";
  const select = $("category");
  select.replaceChildren();
  for (const name of Object.keys(manifest.categories).sort()) {
    select.append(new Option(name, name));
  }
  $("threshold-info").textContent = thresholdText(select.value);
  $("trained-on").textContent = trainedOnText(select.value);
  showDataBanner();
}

function show(entry) {
  const r = entry.result;
  $("result").hidden = false;
  $("verdict").textContent = r.verdict;
  $("verdict").className = "verdict " + r.verdict;
  $("result-name").textContent = entry.name + " (" + r.size.join("x") + ")";
  $("score").textContent = fmt(r.score);
  $("threshold").textContent = fmt(r.threshold);
  $("normalized").textContent = fmt(r.normalized_score, 3) + " (above 1 is NOK)";
  $("regions").textContent = r.region_count + " (" + r.region_area + " pixels above " +
    fmt(r.pixel_threshold) + ")";
  $("seconds").textContent = fmt(r.seconds, 3) + " s";
  $("note").textContent = r.note || "";
  const share = r.normalized_score === null ? 0 : Math.min(r.normalized_score / 2, 1);
  $("gauge-bar").style.width = (share * 100).toFixed(1) + "%";
  $("gauge-bar").className = r.verdict;
  $("overlay").src = r.overlay_png ? "data:image/png;base64," + r.overlay_png : "";
}

function renderHistory() {
  const rows = history.map((entry) => {
    const tr = document.createElement("tr");
    const cells = [entry.time, entry.name, entry.result.category, entry.result.verdict,
      fmt(entry.result.normalized_score, 3)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.children[3].className = entry.result.verdict;
    tr.addEventListener("click", () => show(entry));
    return tr;
  });
  $("history").tBodies[0].replaceChildren(...rows);
}

async function score(file) {
  if (!manifest) return showError("the model is not loaded yet");
  const category = $("category").value;
  const form = new FormData();
  form.append("image", file, file.name);
  showError("");
  $("status").textContent = "scoring " + file.name + "...";
  try {
    const result = await api("/v1/predict/" + encodeURIComponent(category) + "?overlay=1",
      { method: "POST", body: form });
    const entry = { name: file.name, time: new Date().toLocaleTimeString(), result };
    history.unshift(entry);
    history.length = Math.min(history.length, HISTORY_MAX);
    show(entry);
    renderHistory();
    $("status").textContent = "";
  } catch (err) {
    $("status").textContent = "";
    showError(file.name + ": " + err.message);
  }
}

function wire() {
  $("history-max").textContent = HISTORY_MAX;
  $("category").addEventListener("change", (e) => {
    $("threshold-info").textContent = thresholdText(e.target.value);
    $("trained-on").textContent = trainedOnText(e.target.value);
  });
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) score(e.target.files[0]);
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) score(e.dataTransfer.files[0]);
  });
  $("token-box").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("fedpatch-token", $("token").value.trim());
    $("token-box").hidden = true;
    loadModel();
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", wire);
