/* Progressive enhancement for the request portal; every page works without it.
   Shows only the parts of a form that apply to the choices made (data-show-when="name=value"). */
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
})();
