// The case page's cell grid, kept up to date without reloading the page.
//
// Push: an EventSource on the grid's data-events-url names the cells that changed (docs/events.md); the
// script fetches just those cards from data-cards-url and puts each in place (or inserts it, in id order).
// Fallback (no data-events-url, no EventSource, or the stream fails): every second it fetches the cards
// that are still queued or classifying. The upload script hands over the ids of accepted files with
// window.HematoVisionGrid.track(ids), so a new cell never depends on a refresh that might be dropped:
// ids wait in a set until a request carries them, and one request at a time carries all that wait.
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

  function place(col) {
    const id = Number(col.dataset.cellCol);
    const existing = grid.querySelector('[data-cell-col="' + id + '"]');
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

  function apply(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    template.content.querySelectorAll("[data-cell-col]").forEach(place);
    const status = template.content.querySelector("#case-status");
    const current = document.getElementById("case-status");
    if (status && current) current.replaceWith(status);
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
      track(
        body.images.map(function (image) {
          return image.id;
        })
      );
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

  window.HematoVisionGrid = {
    track: trackNew,
    uploadStarted: function () {
      uploadsInProgress += 1;
      schedulePoll();
    },
    uploadFinished: function () {
      uploadsInProgress = Math.max(0, uploadsInProgress - 1);
    },
  };

  if (grid.dataset.transport === "push") listen();
  schedulePoll();
})();
