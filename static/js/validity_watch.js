// The review page's and the differential's "not validated for images like these" banner, shown without a
// reload once the case is escalated (issue 9). These pages have no live grid: the banner's <template>
// (_validity_warning.html, {% validity_warning case watch=True %}) carries what this script needs.
//
// Push: an EventSource on data-watch-events-url; an `images` event whose case carries model_warning shows the
// banner (docs/events.md). Fallback (no push on this deployment, no EventSource, or the stream refused):
// while any of the images that were pending when the page was rendered (data-watch-pending) is still queued
// or classifying, their cards are fetched from data-watch-cards-url every few seconds, and a card flagged
// for the escalation's reason shows it (the case page's fallback reads its cards the same way). A case
// escalated stays escalated: once shown, the banner stays and the script stops listening.
(function () {
  "use strict";

  const waiting = document.querySelector("template[data-validity-warning-template][data-watch-cards-url]");
  if (!waiting) return;

  const POLL_MS = 3000;
  const MAX_IDS = 500; // per cards request (cases.views_live.MAX_IDS_PER_REQUEST)
  const PENDING = { queued: true, classifying: true };
  const cardsUrl = waiting.dataset.watchCardsUrl;
  const eventsUrl = waiting.dataset.watchEventsUrl;
  let pending = (waiting.dataset.watchPending || "")
    .split(",")
    .filter(Boolean)
    .map(Number);
  let source = null;
  let pollTimer = null;
  let polling = false;
  let shown = false;

  function show() {
    if (shown) return;
    shown = true;
    if (waiting.isConnected) waiting.replaceWith(waiting.content.cloneNode(true));
    if (source) source.close();
    if (pollTimer) clearTimeout(pollTimer);
  }

  // One look at the pending images' cards: shows the banner if one is flagged for the escalation; keeps the
  // ids still pending (a pending upload that became a field is finished: its cells come with its card).
  function check() {
    if (shown || polling || !pending.length) return Promise.resolve();
    polling = true;
    const asked = pending.slice(0, MAX_IDS);
    const url = cardsUrl + "?ids=" + asked.join(",");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        const cards = document.createElement("template");
        cards.innerHTML = html;
        if (cards.content.querySelector('[data-flag-reasons~="unvalidated_case"]')) {
          show();
          return;
        }
        const still = new Set();
        cards.content.querySelectorAll("[data-image-id][data-status]").forEach(function (card) {
          if (PENDING[card.dataset.status]) still.add(Number(card.dataset.imageId));
        });
        pending = asked
          .filter(function (id) {
            return still.has(id);
          })
          .concat(pending.slice(asked.length));
      })
      .catch(function () {
        // A failed request is tried again on the next round.
      })
      .finally(function () {
        polling = false;
      });
  }

  function poll() {
    check().then(function () {
      if (!shown && pending.length) pollTimer = setTimeout(poll, POLL_MS);
    });
  }

  function listen() {
    source = new EventSource(eventsUrl);
    waiting.dataset.transport = "push";
    // Anything escalated while the stream was (re)connecting.
    source.addEventListener("ready", check);
    source.addEventListener("images", function (event) {
      let body;
      try {
        body = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (body.case && body.case.model_warning) show();
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && !shown) {
        // Refused (e.g. 503: no push on this deployment) or gone for good: poll from now on.
        waiting.dataset.transport = "polling";
        poll();
      }
    });
  }

  if (eventsUrl && window.EventSource) {
    listen();
  } else {
    waiting.dataset.transport = "polling";
    poll();
  }
})();
