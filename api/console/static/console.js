/* linevault console: the only script. Progressive enhancement; every page works
   without it except the copy buttons.
   - Buttons with commandfor/command open and close <dialog>s (HTML invoker commands);
     this fills in for browsers without them.
   - Buttons with data-copy-from copy the text of the element with that id. */
"use strict";
(function () {
  var native = "command" in HTMLButtonElement.prototype;
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) { return; }
    if (!native && button.hasAttribute("commandfor")) {
      var dialog = document.getElementById(button.getAttribute("commandfor"));
      var command = button.getAttribute("command");
      if (dialog && command === "show-modal") { dialog.showModal(); }
      if (dialog && command === "close") { dialog.close(); }
    }
    var source = button.getAttribute("data-copy-from");
    if (source) {
      var text = document.getElementById(source).textContent;
      navigator.clipboard.writeText(text).then(function () {
        var status = document.getElementById(source + "-status");
        if (status) { status.textContent = "Copied."; }
      });
    }
  });
  document.querySelectorAll("dialog[data-open]").forEach(function (dialog) {
    dialog.showModal();
  });
})();
