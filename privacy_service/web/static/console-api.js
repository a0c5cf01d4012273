/* The console's API reference: Swagger UI (vendored under /static/vendor/swagger-ui) reading this
   service's own OpenAPI document. No request leaves this origin. */
(function () {
  "use strict";
  var target = document.getElementById("api-reference");
  if (!target || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  window.SwaggerUIBundle({
    url: target.getAttribute("data-openapi-url"),
    domNode: target,
    deepLinking: false,
    validatorUrl: null,
    tryItOutEnabled: false
  });
})();
