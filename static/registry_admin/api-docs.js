// Renders the OpenAPI document with the vendored Swagger UI. In a file of its own, as the CSP
// allows no inline script. No validator badge: it would call validator.swagger.io.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.getAttribute("data-schema-url"),
    domNode: root,
    validatorUrl: null,
    deepLinking: false,
    tryItOutEnabled: false,
  });
})();
