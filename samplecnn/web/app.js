// The samplecnn page: send one file to POST /v1/tag, then draw the tag bars, the taggram and the JSON.
"use strict";

const $ = (id) => document.getElementById(id);

async function showModel() {
  try {
    const body = await (await fetch("/v1/models")).json();
    const m = body.models[0];
    const packs = (m.packs || []).map((p) => `${p.name} (${p.tags.length})`);
    $("model").textContent = `Model: ${m.id} (${m.arch}, ${m.tags.length} tags)` +
      (packs.length ? `; your tag packs: ${packs.join(", ")}.` : ".");
  } catch (e) {
    $("model").textContent = "Model information is unavailable.";
  }
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function tagFile(file) {
  setStatus(`Tagging ${file.name}…`, false);
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  let response, body;
  try {
    response = await fetch("/v1/tag?top_k=0", { method: "POST", body: form });
    body = await response.json();
  } catch (e) {
    setStatus(`The request failed: ${e.message}`, true);
    return;
  }
  if (!response.ok) {
    setStatus(`Error ${response.status}: ${body.error ? body.error.message : response.statusText}`, true);
    return;
  }
  render(body);
  setStatus(`Done in ${(body.timing.queued_s + body.timing.tag_s).toFixed(2)} s.`, false);
}

function render(body) {
  $("title").textContent = body.filename;
  const own = body.pack_decisions || [];
  $("summary").textContent = `${body.duration.toFixed(1)} s, ${body.segments} segment` +
    `${body.segments === 1 ? "" : "s"}${body.padded ? " (padded)" : ""}; decided: ` +
    (body.decisions.length ? body.decisions.join(", ") : "(none)") +
    (body.pack_scores ? `; your tags: ${own.length ? own.join(", ") : "(none)"}` : "");
  drawBars($("bars"), body.top, body.decisions);
  // the tag packs' tags (`serve --tags PACK`), best first, beside the model's
  const packed = Object.entries(body.pack_scores || {}).map(([tag, score]) => ({ tag, score }));
  packed.sort((a, b) => b.score - a.score);
  drawBars($("own-bars"), packed, own);
  $("own-box").hidden = !body.pack_scores;
  $("taggram").src = body.taggram_url;
  $("json").textContent = JSON.stringify(body, null, 1);
  $("result").hidden = false;
}

function drawBars(list, scored, decisions) {
  const decided = new Set(decisions);
  list.replaceChildren();
  for (const { tag, score } of scored) {
    const li = document.createElement("li");
    li.className = decided.has(tag) ? "decided" : "";
    li.dataset.tag = tag;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = tag;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * score).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = score.toFixed(3);
    li.append(name, track, value);
    list.append(li);
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => { if (e.target.files.length) tagFile(e.target.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) tagFile(e.dataTransfer.files[0]);
});
showModel();
