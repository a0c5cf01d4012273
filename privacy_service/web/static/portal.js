/* Progressive enhancement for the request portal; every page works without it.
   - Shows only the parts of a form that apply to the choices made (data-show-when="name=value").
   - Rewrites each <time datetime data-local-time> in the browser's own time zone and locale (the
     server wrote it in the policy's zone), and says so in the note that names the zone. */
(function () {
  "use strict";

  function sync(form) {
    form.querySelectorAll("[data-show-when]").forEach(function (part) {
      var rule = part.getAttribute("data-show-when").split("=");
      var checked = form.querySelector('input[name="' + rule[0] + '"]:checked');
      part.hidden = !(checked && checked.value === rule[1]);
    });
  }

  document.querySelectorAll("form.portal-form").forEach(function (form) {
    sync(form);
    form.addEventListener("change", function () {
      sync(form);
    });
  });

  // The visitor's own variant of the page's language (en-GB, en-US), else the page's default (en-IE).
  function dateLocale() {
    var language = (document.documentElement.lang || "").toLowerCase();
    var preferred = navigator.languages || [navigator.language];
    for (var i = 0; i < preferred.length; i += 1) {
      if (preferred[i] && preferred[i].toLowerCase().split("-")[0] === language) {
        return preferred[i];
      }
    }
    var meta = document.querySelector('meta[name="date-locale"]');
    return meta ? meta.getAttribute("content") : language;
  }

  function localTimes() {
    var times = document.querySelectorAll("time[data-local-time]");
    if (!times.length || typeof Intl === "undefined") {
      return;
    }
    var format;
    try {
      format = new Intl.DateTimeFormat(dateLocale(), { dateStyle: "long", timeStyle: "short" });
    } catch (error) {
      return; // an old browser: the server's text stays, and so does the note naming its zone
    }
    times.forEach(function (time) {
      var moment = new Date(time.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        time.textContent = format.format(moment);
      }
    });
    var zone = format.resolvedOptions().timeZone;
    document.querySelectorAll("[data-local-note]").forEach(function (note) {
      note.textContent = note.getAttribute("data-local-note").replace("{zone}", zone);
    });
  }

  localTimes();
})();
