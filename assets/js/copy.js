// Copy buttons: <button data-copy="element-id" data-copied="Copied" data-selected="…">. Each
// button gets a status line after its box, so that "Copied" is heard as well as seen. Where the
// clipboard API is unavailable (plain http on a non-local host) or refuses, the text is
// selected instead and the line says so, with the keys to press (data-selected).
(function () {
  'use strict';
  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  // A live region is heard only if it was in the page before it changed: one per button, now.
  function noteOf(btn) {
    var id = btn.getAttribute('data-copy') + '-copy-note';
    var note = document.getElementById(id);
    if (note) return note;
    note = document.createElement('p');
    note.id = id;
    note.className = 'copy-note';
    note.setAttribute('role', 'status');
    var box = btn.parentNode;
    box.parentNode.insertBefore(note, box.nextSibling);
    return note;
  }
  Array.prototype.forEach.call(document.querySelectorAll('[data-copy]'), noteOf);

  // Emptied first and filled a moment later, so that the same words said twice are heard twice.
  function say(note, text, visible) {
    note.textContent = '';
    note.className = 'copy-note' + (visible ? '' : ' visually-hidden');
    setTimeout(function () { note.textContent = text; }, 100);
  }

  document.addEventListener('click', function (ev) {
    var btn = ev.target.closest ? ev.target.closest('[data-copy]') : null;
    if (!btn) return;
    var el = document.getElementById(btn.getAttribute('data-copy'));
    if (!el) return;
    var note = noteOf(btn);
    var text = el.textContent.trim();
    var label = btn.getAttribute('data-label') || btn.textContent;
    btn.setAttribute('data-label', label);
    function done() {
      var copied = btn.getAttribute('data-copied') || label;
      btn.textContent = copied;
      // The button says it to the eye; the hidden line to a screen reader.
      say(note, copied, false);
      setTimeout(function () { btn.textContent = label; note.textContent = ''; }, 1600);
    }
    function selected() {
      select(el);
      var how = btn.getAttribute('data-selected');
      if (how) say(note, how, true);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, selected);
    } else {
      selected();
    }
  });
})();
