// Live countdowns (data-seconds) and a refresh while a runtime is starting or stopping. No build step.
(function () {
  "use strict";
  function fmt(s) {
    s = Math.max(0, Math.floor(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (sec < 10 ? "0" : "") + sec;
    return h ? h + "h" + mm + "m" + ss + "s" : m + "m" + ss + "s";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var started = Date.now();
    var clocks = Array.prototype.slice.call(document.querySelectorAll(".countdown[data-seconds]"));
    clocks.forEach(function (el) { el.dataset.start = el.dataset.seconds; });
    if (clocks.length) {
      setInterval(function () {
        var gone = (Date.now() - started) / 1000;
        clocks.forEach(function (el) {
          var left = parseFloat(el.dataset.start) - gone;
          el.textContent = fmt(left);
          if (left <= 0 && el.id === "time-left") { window.location.reload(); }
        });
      }, 1000);
    }
    var runtime = document.getElementById("runtime");
    if (runtime && (runtime.dataset.state === "starting" || runtime.dataset.state === "stopping")) {
      setTimeout(function () { window.location.reload(); }, 3000);
    }
  });
})();
