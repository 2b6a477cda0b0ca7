// The review station: select cells by click or keyboard, one key per class, review without reloading the page
// (the server sends back the changed parts; selection, focus and scroll are kept), zoom with Grad-CAM.
// Without this script the page still works: checkboxes select, buttons submit and the page reloads.
(function () {
  "use strict";
  const form = document.getElementById("review-form");
  if (!form) {
    return;
  }
  const signed = form.dataset.signed === "true";
  const counter = document.getElementById("selection-count");
  const classSelect = document.getElementById("to-label");
  const reason = document.getElementById("reason");
  const TARGET_KEY = "hematovision.review.target";
  // The page keeps the reviewer's place itself after each partial update (below); the browser's own scroll
  // anchoring would move it a second time.
  document.documentElement.style.overflowAnchor = "none";
  let busy = false;
  // Django's JavaScript catalogue (base.html) translates; without it the English stays.
  const gettext = window.gettext || ((text) => text);
  const interpolate = window.interpolate ||
    ((format, values) => format.replace(/%\((\w+)\)s/g, (match, name) => String(values[name])));

  const cards = () => Array.from(form.querySelectorAll("[data-testid='review-cell']"));
  const checkbox = (card) => card.querySelector("input[name='cells']");
  const cardOf = (element) => (element && element.closest ? element.closest("[data-testid='review-cell']") : null);
  const selectedCards = () => cards().filter((card) => checkbox(card).checked);

  function refresh() {
    let count = 0;
    cards().forEach((card) => {
      const checked = checkbox(card).checked;
      card.classList.toggle("selected", checked);
      count += checked ? 1 : 0;
    });
    if (counter) {
      counter.textContent = String(count);
    }
  }

  function selectAll(value) {
    cards().forEach((card) => { checkbox(card).checked = value; });
    refresh();
  }

  function showAlert(kind, message) {
    const slot = document.getElementById("review-alert");
    if (!slot) {
      return;
    }
    slot.replaceChildren();
    const alert = document.createElement("div");
    alert.className = `alert alert-${kind} py-2`;
    alert.setAttribute("role", kind === "danger" ? "alert" : "status");
    alert.dataset.testid = kind === "danger" ? "review-error" : "review-notice";
    alert.textContent = message;
    slot.appendChild(alert);
  }

  // --- the running differential's target (100 or 200 leukocytes), remembered in this browser -----------------
  function applyTarget() {
    const panel = document.getElementById("review-count");
    const select = document.getElementById("target-count");
    if (!panel || !select) {
      return;
    }
    const stored = window.localStorage ? window.localStorage.getItem(TARGET_KEY) : null;
    if (stored && select.querySelector(`option[value='${stored}']`) && select.value !== stored) {
      select.value = stored;
    }
    const target = Number(select.value);
    const counted = Number(panel.dataset.reviewedLeukocytes || 0);
    const bar = panel.querySelector(".progress-bar");
    const wrapper = panel.querySelector("[role='progressbar']");
    const text = panel.querySelector("[data-testid='target-progress']");
    if (bar) {
      bar.style.width = `${Math.min(100, Math.round((100 * counted) / target))}%`;
      bar.classList.toggle("bg-success", counted >= target);
    }
    if (wrapper) {
      wrapper.setAttribute("aria-valuemax", String(target));
    }
    if (text) {
      // The same words as the server's _review_count.html; only numbers go into the markup.
      const format = gettext("<strong>%(counted)s</strong> / %(target)s leukocytes counted");
      text.innerHTML = interpolate(format, { counted: Number(counted), target: Number(target) }, true) +
        (counted >= target ? ` — ${gettext("target reached")}` : "");
    }
  }

  form.addEventListener("change", (event) => {
    if (event.target.id === "target-count") {
      if (window.localStorage) {
        window.localStorage.setItem(TARGET_KEY, event.target.value);
      }
      applyTarget();
    } else if (event.target.matches("input[name='cells']")) {
      refresh();
    }
  });

  // --- partial updates -----------------------------------------------------------------------------------------
  function swapPartials(html) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const parts = doc.querySelectorAll("[data-partial]");
    // Thumbnails already shown are moved into the new gallery, not fetched again (the image view is no-store).
    const shown = new Map();
    document.querySelectorAll("[data-testid='review-cell'] img.cell-thumb").forEach((img) => {
      shown.set(`${cardOf(img).dataset.imageId} ${img.getAttribute("src")}`, img);
    });
    parts.forEach((part) => {
      const current = document.getElementById(part.id);
      if (!current) {
        return;
      }
      const fresh = document.importNode(part, true);
      fresh.querySelectorAll("[data-testid='review-cell'] img.cell-thumb").forEach((img) => {
        const old = shown.get(`${cardOf(img).dataset.imageId} ${img.getAttribute("src")}`);
        if (old) {
          img.replaceWith(old);
        }
      });
      current.replaceWith(fresh);
    });
    return parts.length > 0;
  }

  function nextCardId(card) {
    const all = cards();
    const index = all.indexOf(card);
    for (let i = index + 1; i < all.length; i += 1) {
      if (all[i].dataset.reviewed !== "true") {
        return all[i].dataset.imageId;
      }
    }
    return index + 1 < all.length ? all[index + 1].dataset.imageId : card.dataset.imageId;
  }

  async function send(submitter, extra) {
    if (busy) {
      return;
    }
    const focused = cardOf(document.activeElement);
    const selection = new Set(selectedCards().map((card) => card.dataset.imageId));
    const body = new FormData(form, submitter || undefined);
    let focusAfter = focused ? focused.dataset.imageId : null;
    const usesSelection = !body.get("confirm_cell");
    if (usesSelection && body.getAll("cells").length === 0 && focused) {
      // Nothing selected: act on the cell that has the keyboard focus, then move on to the next one.
      body.append("cells", focused.dataset.imageId);
      focusAfter = nextCardId(focused);
    }
    Object.entries(extra || {}).forEach(([key, value]) => body.set(key, value));
    // What the reviewer looks at stays where it is on the screen: the cell that gets the focus next (else the
    // page keeps its scroll position).
    const scroll = window.scrollY;
    const anchorOf = (id) => id && form.querySelector(`[data-testid='review-cell'][data-image-id='${id}']`);
    const anchorBefore = anchorOf(focusAfter);
    const anchorTop = anchorBefore ? anchorBefore.getBoundingClientRect().top : null;
    busy = true;
    form.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.getAttribute("action"), {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "X-Review-Partial": "1" },
      });
      const html = await response.text();
      if (!swapPartials(html)) {
        showAlert("danger", interpolate(gettext("The server answered %(status)s without the review; reload the page. Nothing was lost."), { status: response.status }, true));
        return;
      }
      // The selection stays what it was (a key on the focused cell does not select it).
      cards().forEach((card) => { checkbox(card).checked = selection.has(card.dataset.imageId); });
      refresh();
      applyTarget();
      // "instant": Bootstrap makes scrolling smooth, and a smooth scroll would still be under way when the
      // reviewer presses the next key.
      const again = anchorOf(focusAfter);
      const top = again && anchorTop !== null ? window.scrollY + again.getBoundingClientRect().top - anchorTop : scroll;
      window.scrollTo({ top, behavior: "instant" });
      if (again) {
        again.focus({ preventScroll: true });
      }
    } catch (error) {
      showAlert("danger", interpolate(gettext("The review could not be sent (%(error)s); check the connection and try again."), { error: error.message }, true));
    } finally {
      busy = false;
      form.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", (event) => {
    if (!window.fetch || !window.DOMParser) {
      return;
    }
    event.preventDefault();
    send(event.submitter);
  });

  function classKey(label) {
    if (signed) {
      // After sign-off a change is an amendment: choose the class, then give the reason.
      classSelect.value = label;
      reason.focus();
      return;
    }
    send(null, { action: "reclassify", to_label: label });
  }

  // --- selection by click and keyboard -------------------------------------------------------------------------
  form.addEventListener("click", (event) => {
    const target = event.target;
    const paletteButton = target.closest("[data-class-key]");
    if (paletteButton && signed) {
      classKey(paletteButton.dataset.label);
      return;
    }
    const card = cardOf(target);
    if (!card) {
      return;
    }
    const zoomButton = target.closest("[data-zoom]");
    if (zoomButton) {
      openZoom(card);
      return;
    }
    if (target.closest("button, a, summary, details, input, select, label")) {
      return;
    }
    checkbox(card).checked = !checkbox(card).checked;
    refresh();
  });

  function moveFocus(card, step) {
    const all = cards();
    const index = card ? all.indexOf(card) : -1;
    const next = all[Math.max(0, Math.min(all.length - 1, index + step))];
    if (next) {
      next.focus();
    }
  }

  function columns(card) {
    const grid = card.parentElement;
    const width = card.getBoundingClientRect().width;
    return Math.max(1, Math.round(grid.getBoundingClientRect().width / Math.max(1, width)));
  }

  const keyLabels = () => {
    const map = {};
    form.querySelectorAll("[data-class-key]").forEach((button) => {
      if (button.dataset.classKey) {
        map[button.dataset.classKey] = button.dataset.label;
      }
    });
    return map;
  };

  document.addEventListener("keydown", (event) => {
    if (document.querySelector(".modal.show")) {
      return;
    }
    const typing = event.target.closest("input[type='text'], input[type='password'], textarea, select");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      if (event.key === "Escape" && typing) {
        typing.blur();
      }
      return;
    }
    const card = cardOf(document.activeElement);
    const labels = keyLabels();
    if (event.key === " " && card && event.target === card) {
      checkbox(card).checked = !checkbox(card).checked;
      refresh();
    } else if (event.key === "a") {
      selectAll(true);
    } else if (event.key === "Escape") {
      selectAll(false);
    } else if (event.key === "c" && !signed) {
      send(null, { action: "confirm" });
    } else if (event.key === "z" && card) {
      openZoom(card);
    } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      moveFocus(card, event.key === "ArrowRight" ? 1 : -1);
    } else if ((event.key === "ArrowDown" || event.key === "ArrowUp") && card) {
      moveFocus(card, (event.key === "ArrowDown" ? 1 : -1) * columns(card));
    } else if (Object.prototype.hasOwnProperty.call(labels, event.key)) {
      classKey(labels[event.key]);
    } else {
      return;
    }
    event.preventDefault();
  });

  form.querySelectorAll("[data-select]").forEach((button) => {
    button.addEventListener("click", () => selectAll(button.dataset.select === "all"));
  });

  // --- zoom with Grad-CAM ----------------------------------------------------------------------------------------
  const zoom = document.getElementById("cell-zoom");
  const zoomImage = zoom && zoom.querySelector(".zoom-image");
  const heatmap = zoom && zoom.querySelector(".zoom-heatmap");
  const gradcamButton = zoom && zoom.querySelector("[data-gradcam-toggle]");
  const opacity = zoom && zoom.querySelector("#gradcam-opacity");
  const legend = zoom && zoom.querySelector("[data-testid='gradcam-legend']");
  const gradcamMessage = zoom && zoom.querySelector("[data-gradcam-message]");
  let zoomCard = null;

  function showHeatmap(show) {
    heatmap.classList.toggle("d-none", !show);
    legend.classList.toggle("d-none", !show);
    gradcamButton.textContent = show ? gettext("Hide Grad-CAM") : gettext("Show Grad-CAM");
    gradcamButton.setAttribute("aria-pressed", show ? "true" : "false");
  }

  function openZoom(card) {
    if (!zoom || !window.bootstrap) {
      return;
    }
    zoomCard = card;
    zoom.querySelector(".modal-title").textContent = card.getAttribute("aria-label") || gettext("Cell");
    zoomImage.src = card.dataset.fullSrc;
    zoomImage.alt = card.getAttribute("aria-label") || gettext("Cell");
    heatmap.removeAttribute("src");
    showHeatmap(false);
    gradcamMessage.textContent = "";
    gradcamButton.disabled = !card.dataset.gradcamSrc;
    const info = zoom.querySelector(".zoom-info");
    info.replaceChildren();
    const template = card.querySelector("template[data-zoom-info]");
    if (template) {
      info.appendChild(template.content.cloneNode(true));
    }
    const field = zoom.querySelector("[data-zoom-field]");
    field.classList.toggle("d-none", !card.dataset.fieldSrc);
    if (card.dataset.fieldSrc) {
      // The field's preview with the cell's box drawn over it, in the field's own pixel coordinates.
      field.querySelector("img").src = card.dataset.fieldSrc;
      const [width, height] = card.dataset.fieldSize.split(",").map(Number);
      const [x0, y0, x1, y1] = card.dataset.box.split(",").map(Number);
      const svg = field.querySelector("svg");
      svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
      const rect = svg.querySelector("rect");
      rect.setAttribute("x", String(x0));
      rect.setAttribute("y", String(y0));
      rect.setAttribute("width", String(x1 - x0));
      rect.setAttribute("height", String(y1 - y0));
    }
    window.bootstrap.Modal.getOrCreateInstance(zoom).show();
  }

  if (zoom) {
    opacity.addEventListener("input", () => { heatmap.style.opacity = String(Number(opacity.value) / 100); });
    heatmap.style.opacity = String(Number(opacity.value) / 100);
    gradcamButton.addEventListener("click", () => {
      if (!zoomCard || !zoomCard.dataset.gradcamSrc) {
        return;
      }
      if (heatmap.getAttribute("src")) {
        showHeatmap(heatmap.classList.contains("d-none"));
        return;
      }
      gradcamButton.disabled = true;
      gradcamButton.textContent = gettext("Computing…");
      const source = `${zoomCard.dataset.gradcamSrc}?mode=heatmap`;
      heatmap.addEventListener("load", () => {
        gradcamButton.disabled = false;
        showHeatmap(true);
      }, { once: true });
      heatmap.addEventListener("error", () => {
        gradcamButton.disabled = false;
        gradcamButton.textContent = gettext("Grad-CAM unavailable");
        heatmap.removeAttribute("src");
        fetch(source, { credentials: "same-origin" })
          .then((response) => response.text())
          .then((message) => { gradcamMessage.textContent = message; });
      }, { once: true });
      heatmap.src = source;
    });
    zoom.addEventListener("hidden.bs.modal", () => {
      if (zoomCard && document.body.contains(zoomCard)) {
        zoomCard.focus({ preventScroll: true });
      }
    });
  }

  // --- the toolbar that stays at the top on wide screens ------------------------------------------------------
  // Its height depends on the width and the language (the class buttons wrap). The page is told where it ends,
  // so a cell scrolled or focused into view and the running differential beside the gallery stay below it.
  const toolbar = form.querySelector(".review-toolbar");
  function placeBelowToolbar() {
    const sticky = toolbar && window.getComputedStyle(toolbar).position === "sticky";
    const bottom = sticky ? Math.ceil(toolbar.getBoundingClientRect().height) + 16 : 0;
    document.documentElement.style.setProperty("--review-toolbar-bottom", `${bottom}px`);
  }
  if (toolbar) {
    placeBelowToolbar();
    window.addEventListener("resize", placeBelowToolbar);
    if (window.ResizeObserver) {
      new ResizeObserver(placeBelowToolbar).observe(toolbar);
    }
  }

  refresh();
  applyTarget();
})();
