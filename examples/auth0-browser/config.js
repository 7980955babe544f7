// The page around Auth0's sample (sample.js). The sample is a fragment: it uses `auth0`,
// `user`, `file`, `fileChooser` and `done` without defining them, so the page does. The lines
// marked CONFIGURATION are the values to change; the rest is the page.

// CONFIGURATION: rolegate's host[:port]. auth0.js always calls https://<domain>/delegation.
var AUTH0_DOMAIN = 'rolegate.example.com';
// CONFIGURATION: the client the person's id_token was issued to (the Connection's clientId).
var AUTH0_CLIENT_ID = 'web';
// CONFIGURATION: where the AWS SDK sends S3 calls; empty for AWS itself.
var AWS_S3_ENDPOINT = '';

var auth0 = new Auth0({
  domain:      AUTH0_DOMAIN,
  clientID:    AUTH0_CLIENT_ID,
  callbackURL: 'dummy'
});

// What the login step left: the person's profile. CONFIGURATION: their id (the NameID, which
// the IAM policy's ${saml:sub} names).
var user = {id: 'alice@example.com'};

var fileChooser = document.getElementById('file-chooser');
Object.defineProperty(window, 'file', {get: function () { return fileChooser.files[0]; }});

var results = document.getElementById('results');
function done(err, data) {
  results.textContent = err ? 'ERROR! ' + (err.message || err) : 'UPLOADED.';
}
// The sample has no error path for the delegation itself; show what breaks.
window.addEventListener('error', function (e) {
  results.textContent = 'ERROR! ' + e.message;
});

AWS.config.update(AWS_S3_ENDPOINT
  ? {region: 'us-east-1', endpoint: AWS_S3_ENDPOINT, s3ForcePathStyle: true}
  : {region: 'us-east-1'});
