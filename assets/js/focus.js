// A look-up that found nothing (order, dashboard) marks its field `autofocus`, so that the
// buyer lands where they must act. These forms send their answer to an address with a
// fragment (`/order#result`), and Chrome then skips autofocus and, going to the fragment once
// the page has loaded, drops the focus: it is moved here after that.
(function () {
  'use strict';
  function land() {
    var field = document.querySelector('[autofocus]');
    // Not once the visitor has moved on: typing in another field would land here (found by a
    // re-check with the script delayed, as on a slow phone).
    var at = document.activeElement;
    if (field && (!at || at === document.body)) field.focus();
  }
  if (document.readyState === 'complete') setTimeout(land, 0);
  else window.addEventListener('load', function () { setTimeout(land, 0); });
})();
