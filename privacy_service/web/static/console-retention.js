/* The console's purge run page, while the run is going: polls the run's progress every 2 s and shows
   it without reloading; when the run has finished, reloads once to show its report. Without scripts the
   page offers a refresh link instead (CSP: script-src 'self', connect-src 'self'; no inline script). */
(function () {
  "use strict";

  var live = document.getElementById("live");
  if (!live || typeof fetch === "undefined") {
    return;
  }
  var url = live.getAttribute("data-progress-url");
  var bar = document.getElementById("run-progress");
  var text = document.getElementById("run-progress-text");
  var refresh = live.querySelector(".retention-refresh");
  var INTERVAL = 2000;
  if (refresh) {
    refresh.hidden = true; // the page follows the run by itself
  }

  function show(progress) {
    if (progress.phase === "purging") {
      bar.max = Math.max(progress.planned, 1);
      bar.value = progress.done;
    } else {
      bar.removeAttribute("value"); // counting: no figure yet
    }
    if (text.textContent !== progress.text) {
      text.textContent = progress.text;
    }
  }

  function stop() {
    if (refresh) {
      refresh.hidden = false; // polling gave up: the link still works
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        var type = response.headers.get("content-type") || "";
        if (!response.ok || type.indexOf("application/json") !== 0) {
          throw new Error("no progress"); // e.g. the session ended: the sign-in page came back
        }
        return response.json();
      })
      .then(function (progress) {
        show(progress);
        if (progress.running) {
          window.setTimeout(poll, INTERVAL);
        } else {
          window.location.reload(); // finished: the page then shows the run's report
        }
      })
      .catch(stop);
  }

  window.setTimeout(poll, INTERVAL);
})();
