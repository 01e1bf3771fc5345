/* bertviz's views call RequireJS: require.config({paths: ...}) to point "jquery" and "d3" at a CDN,
 * then requirejs(["jquery", "d3"], draw). The built book loads jQuery and d3 v5 from installed
 * packages as plain scripts just before this one, so this hands them to bertviz directly: no
 * RequireJS, no network. (Written for this book; it implements only what bertviz calls.) */
(function () {
  "use strict";
  var loaded = {
    jquery: function () { return window.jQuery; },
    d3: function () { return window.d3; },
  };
  function requirejs(names, callback) {
    var modules = names.map(function (name) {
      var module = loaded[name] && loaded[name]();
      if (!module) {
        throw new Error("bertviz offline: no module '" + name + "' on this page (the book's build loads jquery and d3)");
      }
      return module;
    });
    callback.apply(window, modules);
  }
  requirejs.config = function () {};  // bertviz's CDN paths: not used, the modules are already here
  window.requirejs = requirejs;
  window.require = requirejs;
})();
