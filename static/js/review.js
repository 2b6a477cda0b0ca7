// The review gallery: select cells by click or keyboard, keyboard shortcuts, Grad-CAM on demand.
// Without this script the page still works: checkboxes select, buttons submit.
(function () {
  "use strict";
  const form = document.getElementById("review-form");
  if (!form) {
    return;
  }
  const cards = Array.from(form.querySelectorAll("[data-testid='review-cell']"));
  const counter = document.getElementById("selection-count");
  const classSelect = document.getElementById("to-label");
  const reason = document.getElementById("reason");

  const checkbox = (card) => card.querySelector("input[name='cells']");

  function refresh() {
    let count = 0;
    cards.forEach((card) => {
      const checked = checkbox(card).checked;
      card.classList.toggle("selected", checked);
      count += checked ? 1 : 0;
    });
    if (counter) {
      counter.textContent = String(count);
    }
  }

  function selectAll(value) {
    cards.forEach((card) => { checkbox(card).checked = value; });
    refresh();
  }

  function submitWith(action) {
    const button = form.querySelector(`button[name='action'][value='${action}']`);
    if (button) {
      form.requestSubmit(button);
    }
  }

  function toggleGradcam(card, button) {
    const overlay = card.querySelector("[data-gradcam-src]");
    const thumbnail = card.querySelector("[data-testid='review-thumbnail']");
    if (!overlay) {
      return;
    }
    if (!overlay.getAttribute("src")) {
      button.disabled = true;
      button.textContent = "Computing…";
      overlay.addEventListener("load", () => {
        button.disabled = false;
        button.textContent = "Image";
        overlay.classList.remove("d-none");
        thumbnail.classList.add("d-none");
      }, { once: true });
      overlay.addEventListener("error", () => {
        button.disabled = false;
        button.textContent = "Grad-CAM unavailable";
        fetch(overlay.getAttribute("src"), { credentials: "same-origin" })
          .then((response) => response.text())
          .then((message) => { button.title = message; });
      }, { once: true });
      overlay.setAttribute("src", overlay.dataset.gradcamSrc);
      return;
    }
    const showing = !overlay.classList.contains("d-none");
    overlay.classList.toggle("d-none", showing);
    thumbnail.classList.toggle("d-none", !showing);
    button.textContent = showing ? "Grad-CAM" : "Image";
  }

  cards.forEach((card) => {
    card.addEventListener("click", (event) => {
      const target = event.target;
      if (target.closest("button, a, summary, details, input")) {
        if (target.matches("input[name='cells']")) {
          refresh();
        }
        const gradcamButton = target.closest("[data-gradcam-toggle]");
        if (gradcamButton) {
          toggleGradcam(card, gradcamButton);
        }
        return;
      }
      checkbox(card).checked = !checkbox(card).checked;
      refresh();
    });
    card.addEventListener("keydown", (event) => {
      if (event.key === " " && event.target === card) {
        event.preventDefault();
        checkbox(card).checked = !checkbox(card).checked;
        refresh();
      }
    });
  });

  form.querySelectorAll("[data-select]").forEach((button) => {
    button.addEventListener("click", () => selectAll(button.dataset.select === "all"));
  });

  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input[type='text'], textarea, select");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      if (event.key === "Escape" && typing) {
        typing.blur();
      }
      return;
    }
    if (event.key === "a") {
      selectAll(true);
    } else if (event.key === "Escape") {
      selectAll(false);
    } else if (event.key === "c") {
      submitWith("confirm");
    } else if (event.key === "r") {
      if (classSelect && classSelect.value && reason && reason.value.trim()) {
        submitWith("reclassify");
      } else if (classSelect && !classSelect.value) {
        classSelect.focus();
      } else if (reason) {
        reason.focus();
      }
    } else if (/^[1-9]$/.test(event.key) && classSelect) {
      const option = classSelect.options[Number(event.key)];
      if (option) {
        classSelect.value = option.value;
        if (reason) {
          reason.focus();
        }
      }
    } else {
      return;
    }
    event.preventDefault();
  });

  refresh();
})();
