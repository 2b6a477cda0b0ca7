// Case page uploads: several files by drag and drop or picker, one request per file so each gets its
// own progress bar, a limited number at a time. Results appear in the cell grid, which htmx refreshes.
(function () {
  "use strict";

  const PARALLEL_UPLOADS = 2;

  function setup(form) {
    const input = form.querySelector('input[type="file"]');
    const dropzone = form.querySelector("[data-upload-dropzone]");
    const submit = form.querySelector("[data-upload-submit]");
    const list = document.querySelector("[data-upload-list]");
    const csrf = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
    const queue = [];
    let active = 0;

    // With the script running, choosing or dropping files uploads them at once; the button is for no-JS use.
    if (submit) submit.classList.add("d-none");

    function refreshCells() {
      const grid = document.querySelector(form.dataset.cellsTarget);
      if (grid && window.htmx) window.htmx.trigger(grid, "refresh");
    }

    function addEntry(file) {
      const item = document.createElement("li");
      item.className = "mb-2";
      item.dataset.testid = "upload-item";
      item.dataset.fileName = file.name;
      const name = document.createElement("div");
      name.className = "small text-truncate";
      name.textContent = file.name;
      const progress = document.createElement("div");
      progress.className = "progress";
      progress.setAttribute("role", "progressbar");
      progress.setAttribute("aria-label", "Upload of " + file.name);
      progress.setAttribute("aria-valuemin", "0");
      progress.setAttribute("aria-valuemax", "100");
      const bar = document.createElement("div");
      bar.className = "progress-bar";
      bar.style.width = "0%";
      bar.dataset.testid = "upload-progress";
      bar.dataset.state = "waiting";
      bar.setAttribute("aria-valuenow", "0");
      progress.appendChild(bar);
      const message = document.createElement("div");
      message.className = "small";
      message.dataset.testid = "upload-message";
      message.textContent = "Waiting…";
      item.append(name, progress, message);
      list.appendChild(item);
      return { bar: bar, message: message };
    }

    function finish(entry, state, text) {
      entry.bar.dataset.state = state;
      entry.bar.classList.remove("progress-bar-striped", "progress-bar-animated");
      entry.bar.classList.add(state === "done" ? "bg-success" : "bg-danger");
      entry.bar.style.width = "100%";
      entry.bar.setAttribute("aria-valuenow", "100");
      entry.message.className = "small " + (state === "done" ? "text-success" : "text-danger");
      entry.message.textContent = text;
    }

    function upload(job) {
      active += 1;
      const entry = job.entry;
      const data = new FormData();
      data.append("files", job.file, job.file.name);
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRFToken", csrf);
      entry.bar.dataset.state = "uploading";
      entry.message.textContent = "Uploading…";
      request.upload.addEventListener("progress", function (event) {
        if (!event.lengthComputable) return;
        const percent = Math.round((event.loaded / event.total) * 100);
        entry.bar.style.width = percent + "%";
        entry.bar.setAttribute("aria-valuenow", String(percent));
        if (percent === 100) {
          entry.bar.classList.add("progress-bar-striped", "progress-bar-animated");
          entry.message.textContent = "Uploaded, checking the image…";
        }
      });
      request.addEventListener("load", function () {
        let body = null;
        try {
          body = JSON.parse(request.responseText);
        } catch (error) {
          body = null;
        }
        if (body && body.accepted && body.accepted.length) {
          finish(entry, "done", "Uploaded — queued for classification.");
        } else if (body && body.rejected && body.rejected.length) {
          finish(entry, "rejected", body.rejected.map(function (r) { return r.message; }).join(" "));
        } else if (body && body.detail) {
          finish(entry, "error", body.detail);
        } else {
          finish(entry, "error", "Upload failed (HTTP " + request.status + "). The file was not added; try again.");
        }
        done();
      });
      request.addEventListener("error", function () {
        finish(entry, "error", "Upload failed: the server could not be reached. The file was not added; try again.");
        done();
      });
      request.send(data);
    }

    function done() {
      active -= 1;
      refreshCells();
      next();
    }

    function next() {
      while (active < PARALLEL_UPLOADS && queue.length) upload(queue.shift());
    }

    function enqueue(files) {
      Array.prototype.forEach.call(files, function (file) {
        queue.push({ file: file, entry: addEntry(file) });
      });
      next();
    }

    input.addEventListener("change", function () {
      enqueue(input.files);
      input.value = "";
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      enqueue(input.files);
      input.value = "";
    });
    ["dragenter", "dragover"].forEach(function (name) {
      dropzone.addEventListener(name, function (event) {
        event.preventDefault();
        dropzone.classList.add("border-primary");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      dropzone.addEventListener(name, function (event) {
        event.preventDefault();
        dropzone.classList.remove("border-primary");
      });
    });
    dropzone.addEventListener("drop", function (event) {
      if (event.dataTransfer && event.dataTransfer.files.length) enqueue(event.dataTransfer.files);
    });
  }

  document.querySelectorAll("[data-upload-form]").forEach(setup);
})();
