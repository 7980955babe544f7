// Auth0's client-side sample for the AWS integration ("Consume AWS APIs from the browser
// securely"): exchange the person's id_token for AWS credentials at /delegation, then upload
// the chosen file to S3 under the person's prefix with the AWS SDK for JavaScript v2.
//
// Unmodified but for the one change auth0.js 6.x and 7.x require: getDelegationToken takes
// (options, callback) with targetClientId inside the options, where the older sample passed
// the target client first. Every value comes from config.js.

var auth0 = new Auth0({
  domain:   AUTH0_DOMAIN,
  clientID: AUTH0_CLIENT_ID
});

var fileChooser = document.getElementById('file-chooser');
var button = document.getElementById('upload-button');
var results = document.getElementById('results');

var aws_arns = {
  role:      AWS_ROLE_ARN,
  principal: AWS_PRINCIPAL_ARN
};

button.addEventListener('click', function () {
  var options = {
    targetClientId: TARGET_CLIENT_ID,
    id_token:       id_token,
    api:            'aws',
    role:           aws_arns.role,
    principal:      aws_arns.principal
  };

  auth0.getDelegationToken(options, function (err, delegationResult) {
    if (err) {
      results.innerHTML = 'ERROR! ' + (err.message || err.error_description || 'delegation failed');
      return;
    }
    var aws_creds = delegationResult.Credentials; // AWS temp credentials

    var bucket = new AWS.S3({params: {Bucket: BUCKET}});
    bucket.config.credentials = new AWS.Credentials(aws_creds.AccessKeyId,
                                                    aws_creds.SecretAccessKey,
                                                    aws_creds.SessionToken);

    var file = fileChooser.files[0];
    if (file) {
      results.innerHTML = '';

      var params = {Key: user.id + '/' + file.name, ContentType: file.type, Body: file};
      bucket.putObject(params, function (err, data) {
        results.innerHTML = err ? 'ERROR!' : 'UPLOADED.';
      });
    } else {
      results.innerHTML = 'Nothing to upload.';
    }
  });
}, false);
