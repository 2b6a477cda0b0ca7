// Case page uploads: several files by drag and drop or picker, several files per request (each file keeps
// its own progress bar), two requests at a time. The accepted files' ids go to the live grid
// (live_grid.js), which shows each cell and its label as soon as the server has them.
(function () {
  "use strict";

  const PARALLEL_UPLOADS = 2;
  const FILES_PER_REQUEST = 10;
  const FIRST_REQUEST_FILES = 2;
  const BYTES_PER_REQUEST = 16 * 1024 * 1024; // below the server's 25 MB request limit
  // Django's JavaScript catalogue (base.html) translates; without it the English stays.
  const gettext = window.gettext || ((text) => text);
  const interpolate = window.interpolate || ((format, values) => format.replace(/%s/g, () => String(values.shift())));
  const QUEUED = gettext("Uploaded — queued for classification.");

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
      progress.setAttribute("aria-label", interpolate(gettext("Upload of %s"), [file.name]));
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
      message.textContent = gettext("Waiting…");
      item.append(name, progress, message);
      list.appendChild(item);
      return { bar: bar, message: message };
    }

    function finish(entry, state, text) {
      entry.bar.dataset.state = state;
      entry.bar.classList.remove("progress-bar-striped");
      entry.bar.classList.add(state === "done" ? "bg-success" : "bg-danger");
      entry.bar.style.width = "100%";
      entry.bar.setAttribute("aria-valuenow", "100");
      entry.message.className = "small " + (state === "done" ? "text-success" : "text-danger");
      entry.message.textContent = text;
    }

    // Several files per request (at most FILES_PER_REQUEST and BYTES_PER_REQUEST), each file with its own
    // bar: the request's upload progress is shared out over its files in the order they are sent.
    function upload(batch) {
      active += 1;
      const data = new FormData();
      const offsets = [];
      let total = 0;
      batch.forEach(function (job) {
        data.append("files", job.file, job.file.name);
        offsets.push(total);
        total += job.file.size;
        job.entry.bar.dataset.state = "uploading";
        job.entry.message.textContent = gettext("Uploading…");
      });
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRFToken", csrf);
      if (grid()) grid().uploadStarted();
      request.upload.addEventListener("progress", function (event) {
        if (!event.lengthComputable) return;
        // Multipart headers make event.total a little larger than the files: scale to the files' bytes.
        const sent = (event.loaded / event.total) * total;
        batch.forEach(function (job, index) {
          const size = job.file.size || 1;
          const percent = Math.max(0, Math.min(100, Math.round(((sent - offsets[index]) / size) * 100)));
          const entry = job.entry;
          if (entry.bar.dataset.state !== "uploading") return;
          entry.bar.style.width = percent + "%";
          entry.bar.setAttribute("aria-valuenow", String(percent));
          if (percent === 100 && !entry.bar.classList.contains("progress-bar-striped")) {
            // Stripes without Bootstrap's moving ones (progress-bar-animated): that animation restyles and
            // repaints every bar on every frame, ~2-4 CPU-s of Chromium's for 100 files (issue 12).
            entry.bar.classList.add("progress-bar-striped");
            entry.message.textContent = gettext("Uploaded, checking the image…");
          }
        });
      });
      request.addEventListener("load", function () {
        let body = null;
        try {
          body = JSON.parse(request.responseText);
        } catch (error) {
          body = null;
        }
        settle(batch, body, request.status);
        done();
      });
      request.addEventListener("error", function () {
        batch.forEach(function (job) {
          finish(job.entry, "error", gettext("Upload failed: the server could not be reached. The file was not added; try again."));
        });
        done();
      });
      request.send(data);
    }

    // The answer lists accepted and rejected files by name, in the order sent: match them to the entries.
    function settle(batch, body, status) {
      const byName = {};
      batch.forEach(function (job) {
        (byName[job.file.name] = byName[job.file.name] || []).push(job);
      });
      function take(name) {
        const jobs = byName[name];
        return jobs && jobs.length ? jobs.shift() : null;
      }
      const acceptedIds = [];
      if (body && body.accepted) {
        body.accepted.forEach(function (item) {
          acceptedIds.push(item.id);
          const job = take(item.name);
          if (job) finish(job.entry, "done", QUEUED);
        });
      }
      if (body && body.rejected) {
        body.rejected.forEach(function (item) {
          const job = take(item.name);
          if (job) finish(job.entry, "rejected", item.message);
        });
      }
      const rest = Object.keys(byName).reduce(function (all, name) {
        return all.concat(byName[name]);
      }, []);
      rest.forEach(function (job) {
        if (body && body.accepted && body.accepted.length && !body.detail) {
          // Accepted under a cleaned-up name (the server keeps only a printable base name).
          finish(job.entry, "done", QUEUED);
        } else if (body && body.detail) {
          finish(job.entry, "error", body.detail);
        } else {
          finish(job.entry, "error", interpolate(gettext("Upload failed (HTTP %s). The file was not added; try again."), [status]));
        }
      });
      if (acceptedIds.length && grid()) {
        if (body.cards && grid().showUploaded) grid().showUploaded(body.cards, acceptedIds);
        else if (grid().showQueued) grid().showQueued(body.accepted);
        else grid().track(acceptedIds);
      }
    }

    function grid() {
      return window.HematoVisionGrid || null;
    }

    function done() {
      active -= 1;
      if (grid()) grid().uploadFinished();
      next();
    }

    // The first requests are small so that the first labels come quickly; later ones carry FILES_PER_REQUEST.
    let requestsSent = 0;

    function takeBatch() {
      const batch = [];
      let bytes = 0;
      const limit = Math.min(FILES_PER_REQUEST, FIRST_REQUEST_FILES * (requestsSent + 1));
      requestsSent += 1;
      while (queue.length && batch.length < limit) {
        const size = queue[0].file.size;
        if (batch.length && bytes + size > BYTES_PER_REQUEST) break;
        batch.push(queue.shift());
        bytes += size;
      }
      return batch;
    }

    function next() {
      while (active < PARALLEL_UPLOADS && queue.length) upload(takeBatch());
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
