// The case page's cell grid, kept up to date without reloading the page.
//
// Push: an EventSource on the grid's data-events-url names the cells that changed (docs/events.md); the
// script fetches just those cards from data-cards-url and puts each in place (or inserts it, in id order).
// Fallback (no data-events-url, no EventSource, or the stream fails): every second it fetches the cards
// that are still queued or classifying. The upload script hands over the ids of accepted files with
// window.HematoVisionGrid.track(ids), so a new cell never depends on a refresh that might be dropped:
// ids wait in a set until a request carries them, and one request at a time carries all that wait.
// An upload's answer carries its cells' cards (showUploaded): they go in place without a request, and an
// event about a cell already shown as the event says fetches nothing (issue 12: 22 -> 8 cards requests
// for 100 cells in the embedded default). A case found imaged unlike the training data shows its "not
// validated" banner as soon as an event (or a fetched card) says so.
(function () {
  "use strict";

  const grid = document.querySelector("[data-live-grid]");
  if (!grid) return;

  const PENDING = { queued: true, classifying: true };
  const POLL_MS = 1000; // without push
  const SAFETY_POLL_MS = 10000; // with push: catches anything a reconnect could have missed
  const RETRY_MS = 1000;
  const cardsUrl = grid.dataset.cardsUrl;
  const eventsUrl = grid.dataset.eventsUrl;
  const waiting = new Set(); // ids to fetch
  let inFlight = false;
  let pushConnected = false;
  let pollTimer = null;
  let retryTimer = null;
  let uploadsInProgress = 0;

  grid.dataset.transport = eventsUrl && window.EventSource ? "push" : "polling";

  // The class names and the card's words in the page's language (_cells.html, case_words.live_grid_words):
  // an event that says a shown cell is classified puts its label in place without fetching the card.
  let words = null;
  try {
    const script = document.getElementById("cell-grid-words");
    words = script ? JSON.parse(script.textContent) : null;
  } catch (error) {
    words = null;
  }

  function cardCols() {
    return grid.querySelectorAll("[data-cell-col]");
  }

  function pendingIds() {
    const ids = [];
    grid.querySelectorAll('[data-testid="cell-card"]').forEach(function (card) {
      if (PENDING[card.dataset.status]) ids.push(Number(card.dataset.imageId));
    });
    return ids;
  }

  function updatePendingFlag() {
    grid.dataset.pending = pendingIds().length ? "true" : "false";
  }

  function place(col, keepFinished) {
    const id = Number(col.dataset.cellCol);
    const existing = grid.querySelector('[data-cell-col="' + id + '"]');
    if (existing && keepFinished) {
      // An upload's answer may be older than the card its cell's event already brought.
      const shown = existing.querySelector('[data-testid="cell-card"]');
      const coming = col.querySelector('[data-testid="cell-card"]');
      if (shown && coming && !PENDING[shown.dataset.status] && PENDING[coming.dataset.status]) return;
    }
    if (existing) {
      // Keep the thumbnail already loaded: a new <img> would fetch (and the server decrypt) it again.
      const oldImg = existing.querySelector('[data-testid="cell-thumbnail"]');
      const newImg = col.querySelector('[data-testid="cell-thumbnail"]');
      if (oldImg && newImg && oldImg.getAttribute("src") === newImg.getAttribute("src")) {
        newImg.replaceWith(oldImg);
      }
      existing.replaceWith(col);
      return;
    }
    const empty = grid.querySelector('[data-testid="cell-grid-empty"]');
    if (empty) empty.remove();
    const after = Array.prototype.find.call(cardCols(), function (other) {
      return Number(other.dataset.cellCol) > id;
    });
    grid.insertBefore(col, after || null);
  }

  // The case-level "not validated for images like these" banner (_validity_warning.html), waiting in a
  // <template> when the page was rendered before the case was escalated: shown once an event says so
  // (case.model_warning) or a card comes flagged for the escalation's reason (the polling fallback). A
  // case escalated stays escalated: the banner is never taken away.
  function showValidityWarning() {
    if (document.querySelector('[data-testid="model-not-validated"]')) return;
    const waitingBanner = document.querySelector("template[data-validity-warning-template]");
    if (waitingBanner) waitingBanner.replaceWith(waitingBanner.content.cloneNode(true));
  }

  function apply(html, keepFinished) {
    const template = document.createElement("template");
    template.innerHTML = html;
    // Looked for before the cards move into the grid.
    if (template.content.querySelector('[data-flag-reasons~="unvalidated_case"]')) showValidityWarning();
    template.content.querySelectorAll("[data-cell-col]").forEach(function (col) {
      place(col, keepFinished);
    });
    const status = template.content.querySelector("#case-status");
    const current = document.getElementById("case-status");
    // An upload's answer may be older than the badge shown: the fetch after the last upload brings it.
    if (status && current && !keepFinished) current.replaceWith(status);
    updatePendingFlag();
  }

  function fetchWaiting() {
    if (inFlight || !waiting.size) return;
    const ids = Array.from(waiting).slice(0, 400);
    ids.forEach(function (id) {
      waiting.delete(id);
    });
    inFlight = true;
    fetch(cardsUrl + "?ids=" + ids.join(","), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(apply)
      .catch(function () {
        // Nothing is lost: the ids wait for the next attempt.
        ids.forEach(function (id) {
          waiting.add(id);
        });
        if (!retryTimer) {
          retryTimer = setTimeout(function () {
            retryTimer = null;
            fetchWaiting();
          }, RETRY_MS);
        }
      })
      .finally(function () {
        inFlight = false;
        fetchWaiting();
        schedulePoll();
      });
  }

  function track(ids) {
    ids.forEach(function (id) {
      waiting.add(Number(id));
    });
    fetchWaiting();
  }

  // Accepted uploads: cells the page already shows as classified or failed (their event came before the
  // upload's answer, as in the embedded default) need no second fetch.
  function trackNew(ids) {
    track(
      ids.filter(function (id) {
        const card = grid.querySelector('[data-testid="cell-card"][data-image-id="' + Number(id) + '"]');
        return !card || PENDING[card.dataset.status];
      })
    );
  }

  function schedulePoll() {
    if (pollTimer) return;
    const interval = pushConnected ? SAFETY_POLL_MS : POLL_MS;
    if (!pendingIds().length && !uploadsInProgress) return;
    pollTimer = setTimeout(function () {
      pollTimer = null;
      track(pendingIds());
      schedulePoll();
    }, interval);
  }

  function restartPoll() {
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
    schedulePoll();
  }

  // The card of a cell shown as queued or classifying, made classified from its event as _cell_card.html
  // renders it: the label (class_name), the confidence ({% widthratio %}: rounded percent) and the status.
  // Anything else (a flag, a field, a message, a retry button, a label or a rounding the page cannot be
  // sure of) is left to the fetched card. Returns whether the card was filled.
  function fill(card, image) {
    const prediction = image.prediction;
    if (!words || !card || !PENDING[card.dataset.status] || image.status !== "classified") return false;
    if (!prediction || prediction.flagged || image.status_message || image.kind !== card.dataset.kind) return false;
    if (!Object.prototype.hasOwnProperty.call(words.names, prediction.label)) return false;
    const percent = Number(prediction.confidence) * 100;
    // The event's confidence has 4 decimals: near .5 the card's own rounding could go either way.
    if (!isFinite(percent) || Math.abs(percent - Math.floor(percent) - 0.5) < 0.006) return false;
    const body = card.querySelector(".card-body");
    const status = card.querySelector('[data-testid="cell-status"]');
    if (!body || !status || card.querySelector("form, [data-testid=cell-failure-message], [data-testid=prediction-label]")) {
      return false;
    }
    const line = document.createElement("div");
    const name = document.createElement("strong");
    name.dataset.testid = "prediction-label";
    name.dataset.label = prediction.label;
    name.textContent = words.names[prediction.label];
    const confidence = document.createElement("span");
    confidence.className = "text-muted";
    confidence.dataset.testid = "prediction-confidence";
    confidence.title = words.confidence;
    confidence.textContent = Math.round(percent) + "%";
    line.append(name, " ", confidence);
    const done = document.createElement("span");
    done.className = "text-success";
    done.textContent = words.classified;
    status.replaceChildren(done);
    body.insertBefore(line, status);
    card.dataset.status = image.status;
    return true;
  }

  // The case badge as _case_status.html renders it, from the case's status as an event read it (a later event,
  // or the card fetched after the last upload, brings a newer one). Unknown words: left to a fetched card.
  function setBadge(value) {
    const status = document.getElementById("case-status");
    const names = words && words.case_statuses;
    if (!status || !names || !Object.prototype.hasOwnProperty.call(names, value)) return;
    if (status.dataset.status === value) return;
    status.dataset.status = value;
    status.textContent = names[value];
  }

  function cardOf(id) {
    return grid.querySelector('[data-testid="cell-card"][data-image-id="' + Number(id) + '"]');
  }

  // Whether a cell's event asks for its card: not when the card already shows what the event says (a
  // pending cell still pending, a finished one with the same label) or when fill() could show it.
  function needsFetch(card, image) {
    if (!card) return true;
    if (card.dataset.status === image.status) {
      if (PENDING[image.status]) return Boolean(image.status_message);
      const label = card.querySelector('[data-testid="prediction-label"]');
      const shownLabel = label ? label.dataset.label : null;
      // A cell flagged after it was shown (its case escalated for review) keeps its label: the flag tells.
      const shownFlagged = Boolean(card.querySelector('[data-testid="cell-flagged"]'));
      const flagged = Boolean(image.prediction && image.prediction.flagged);
      return shownLabel !== (image.prediction ? image.prediction.label : null) || shownFlagged !== flagged;
    }
    return !fill(card, image);
  }

  function listen() {
    const source = new EventSource(eventsUrl);
    source.addEventListener("ready", function () {
      pushConnected = true;
      grid.dataset.transport = "push";
      // Anything that changed while the stream was (re)connecting.
      track(pendingIds());
      restartPoll();
    });
    source.addEventListener("images", function (event) {
      let body;
      try {
        body = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (body.case && body.case.model_warning) showValidityWarning();
      // A cell already shown as the event says (its card came with the upload's answer) needs no fetch; a
      // plain classified cell shown as pending gets its label from the event (fill); the case's badge, when
      // the event's status differs, is set from the event (setBadge), else comes with one card.
      lastCaseStatus = body.case ? body.case.status : null;
      if (lastCaseStatus) setBadge(lastCaseStatus);
      const status = document.getElementById("case-status");
      const caseChanged = !body.case || !status || status.dataset.status !== body.case.status;
      const ids = body.images
        .filter(function (image) {
          const card = cardOf(image.id);
          if (!card && uploadsInProgress) {
            // Most likely in an upload's answer on its way (queued, or classified when tasks run
            // in-process): wait for it a moment.
            defer(image);
            return false;
          }
          return needsFetch(card, image);
        })
        .map(function (image) {
          return Number(image.id);
        });
      if (caseChanged && !ids.length && !deferred.size && body.images.length) ids.push(Number(body.images[0].id));
      track(ids);
      updatePendingFlag();
    });
    source.addEventListener("error", function () {
      pushConnected = false;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. 503: no push on this deployment) or gone for good: poll from now on.
        grid.dataset.transport = "polling";
      }
      restartPoll();
    });
  }

  const deferred = new Map(); // id -> [the image as its latest event had it, when first deferred]
  let deferTimer = null;
  let lastCaseStatus = null; // as the latest event had it
  let lastUploadedId = null; // shown from an upload's answer, not fetched since
  const DEFER_MS = 300;
  const DEFER_MAX_MS = 3000; // a cell no upload's answer brings (another tab's) is fetched after this

  function defer(image) {
    const id = Number(image.id);
    deferred.set(id, [image, deferred.has(id) ? deferred.get(id)[1] : Date.now()]);
    if (!deferTimer) deferTimer = setTimeout(flushDeferred, DEFER_MS);
  }

  function flushDeferred() {
    deferTimer = null;
    const ids = [];
    let first = null;
    deferred.forEach(function (entry, id) {
      const card = cardOf(id);
      if (!card && uploadsInProgress && Date.now() - entry[1] < DEFER_MAX_MS) return; // still on its way
      deferred.delete(id);
      if (first === null) first = id;
      if (needsFetch(card, entry[0])) ids.push(id);
    });
    // The case's badge comes with any card: one is enough when only the badge is behind (and its words unknown).
    if (lastCaseStatus) setBadge(lastCaseStatus);
    const status = document.getElementById("case-status");
    if (!ids.length && first !== null && lastCaseStatus && status && status.dataset.status !== lastCaseStatus) {
      ids.push(first);
    }
    if (deferred.size && !deferTimer) deferTimer = setTimeout(flushDeferred, DEFER_MS);
    track(ids);
    updatePendingFlag();
  }

  // Accepted uploads with their cards (the upload's answer): put in place at once; a cell still queued
  // waits for its event (or the poll), a cell missing from the answer is fetched.
  function showUploaded(html, ids) {
    apply(html, true);
    if (ids.length) lastUploadedId = Number(ids[ids.length - 1]);
    track(
      ids.filter(function (id) {
        return !grid.querySelector('[data-testid="cell-card"][data-image-id="' + Number(id) + '"]');
      })
    );
    schedulePoll();
  }

  // Accepted uploads without cards in the answer (a broker classifies them: they are all queued when it
  // leaves): each drawn from the page's queued card (_cells.html), its id in place of the placeholder's, so
  // the server renders no card per upload. A cell already shown (its event's card came first) is kept.
  const queuedTemplate = document.querySelector("template[data-queued-card-template]");

  function showQueued(items) {
    const ids = items.map(function (item) {
      return Number(item.id);
    });
    if (!queuedTemplate) {
      trackNew(ids);
      return;
    }
    const placeholder = queuedTemplate.dataset.placeholderId;
    items.forEach(function (item) {
      const id = Number(item.id);
      if (item.status !== "queued" || !Number.isInteger(id) || cardOf(id)) return;
      const template = document.createElement("template");
      template.innerHTML = queuedTemplate.innerHTML.split(placeholder).join(String(id));
      const col = template.content.querySelector("[data-cell-col]");
      const name = col && col.querySelector("[data-cell-name]");
      if (!col || !name) return;
      name.textContent = item.name;
      name.title = item.name;
      place(col, true);
    });
    if (ids.length) lastUploadedId = ids[ids.length - 1];
    // Anything not drawn here (not queued, or not drawable) is fetched.
    track(
      ids.filter(function (id) {
        return !cardOf(id);
      })
    );
    flushDeferredNow();
    updatePendingFlag();
    schedulePoll();
  }

  // Events that waited for these cards need not wait for the next tick of the timer.
  function flushDeferredNow() {
    if (!deferred.size) return;
    if (deferTimer) clearTimeout(deferTimer);
    flushDeferred();
  }

  window.HematoVisionGrid = {
    track: trackNew,
    showUploaded: showUploaded,
    showQueued: showQueued,
    uploadStarted: function () {
      uploadsInProgress += 1;
      schedulePoll();
    },
    uploadFinished: function () {
      uploadsInProgress = Math.max(0, uploadsInProgress - 1);
      if (!uploadsInProgress && lastUploadedId !== null) {
        // One card fetched after the last upload brings the case's badge up to date.
        track([lastUploadedId]);
        lastUploadedId = null;
      }
    },
  };

  if (grid.dataset.transport === "push") listen();
  schedulePoll();
})();
