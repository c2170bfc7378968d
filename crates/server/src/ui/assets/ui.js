// Gantry web UI: the only script. Every page works without it; with it, a
// run page follows its run live (server-sent events), its action buttons
// act without leaving the page, and older log lines load in place.
// Served as a static file under a CSP without 'unsafe-inline'.
"use strict";

(function () {
  function status(message) {
    var region = document.getElementById("live-status");
    if (region) {
      region.textContent = message;
    }
  }

  function atBottom(element) {
    return element.scrollHeight - element.scrollTop - element.clientHeight < 40;
  }

  // The run's state section, re-rendered by the server on every change.
  // Focus stays on the same control when it survives the update.
  function replaceRun(html, version) {
    var live = document.getElementById("run-live");
    if (!live || live.getAttribute("data-version") === version) {
      return;
    }
    // A control is known by its form's action (…/confirm, …/stop).
    var focused = document.activeElement;
    var focusForm = focused && live.contains(focused) && focused.form ? focused.form.getAttribute("action") : null;
    var hadFocus = focused && live.contains(focused);
    live.innerHTML = html;
    live.setAttribute("data-version", version);
    bindLiveForms(live);
    if (hadFocus) {
      var again = null;
      Array.prototype.forEach.call(live.querySelectorAll("form"), function (form) {
        if (form.getAttribute("action") === focusForm) {
          again = form.querySelector("button");
        }
      });
      (again || live).focus();
    }
  }

  function follow(log) {
    var url = log.getAttribute("data-events");
    if (!url || typeof EventSource === "undefined") {
      return;
    }
    var source = new EventSource(url);
    source.addEventListener("log", function (event) {
      var data = JSON.parse(event.data);
      var follow = atBottom(log);
      log.insertAdjacentHTML("beforeend", data.html);
      log.setAttribute("data-next", data.next);
      if (follow) {
        log.scrollTop = log.scrollHeight;
      }
    });
    source.addEventListener("run", function (event) {
      var data = JSON.parse(event.data);
      replaceRun(data.html, data.version);
    });
    source.addEventListener("end", function () {
      source.close();
      status("The run ended; its log is complete.");
    });
    source.onerror = function () {
      // EventSource reconnects by itself, resuming after the last event.
      status("Connection lost; reconnecting…");
    };
    source.onopen = function () {
      status("");
    };
  }

  function bindLiveForms(root) {
    var forms = root.querySelectorAll("form[data-live]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var button = form.querySelector("button");
        if (button) {
          button.disabled = true;
        }
        fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
          headers: { "Accept": "text/html" },
        })
          .then(function (response) {
            if (!response.ok) {
              return response.text().then(function (text) {
                var doc = new DOMParser().parseFromString(text, "text/html");
                var message = doc.querySelector("[role=alert]");
                status(message ? message.textContent : "The action failed (" + response.status + ").");
                if (button) {
                  button.disabled = false;
                }
              });
            }
            status("Done: " + (button ? button.textContent : "action") + ".");
          })
          .catch(function () {
            status("The server could not be reached.");
            if (button) {
              button.disabled = false;
            }
          });
      });
    });
  }

  function bindOlder(log) {
    var more = document.getElementById("log-older");
    if (!more) {
      return;
    }
    more.addEventListener("click", function (event) {
      event.preventDefault();
      more.setAttribute("aria-busy", "true");
      fetch(more.href, { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var older = doc.getElementById("log");
          var next = doc.getElementById("log-older");
          if (older) {
            var height = log.scrollHeight;
            log.insertAdjacentHTML("afterbegin", older.innerHTML);
            log.scrollTop += log.scrollHeight - height;
          }
          if (next) {
            more.href = next.href;
            more.removeAttribute("aria-busy");
          } else {
            more.parentNode.removeChild(more);
            status("This is the start of the log.");
          }
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // Says the script runs (the tests tell a page with it from one without).
    document.documentElement.setAttribute("data-ui-script", "on");
    var log = document.getElementById("log");
    if (log) {
      log.scrollTop = log.scrollHeight;
      follow(log);
      bindOlder(log);
    }
    bindLiveForms(document);
  });
})();
