# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The acme-client gem (Debian's ruby-acme-client 2.0.9, the client of
# GitLab and many Rails apps) driven the way an application drives it:
# one step per run, the account key and URL kept in STATE.  t/acme_clients2.t
# runs it and checks every result with its own oracles; what this script
# prints ("key value" lines) is only the client's view.
#
#   ruby acme_client.rb STATE register MAIL
#   ruby acme_client.rb STATE issue http-01|dns-01 OUT NAME...
#   ruby acme_client.rb STATE revoke CERT REASON
#   ruby acme_client.rb STATE update MAIL
#   ruby acme_client.rb STATE keychange
#   ruby acme_client.rb STATE deactivate
#   ruby acme_client.rb STATE eab KID HMAC MAIL
#
# Environment: ACME_DIRECTORY, ACME_CA_FILE (the only trusted root),
# HTTP01_PORT (the validator's http-01 port; the script answers there
# itself), CHALLTESTSRV (pebble-challtestsrv's management URL, for dns-01).

require 'acme-client'
require 'socket'
require 'net/http'
require 'json'
require 'fileutils'

STATE = ARGV.shift or abort('usage: acme_client.rb STATE COMMAND ...')
CMD = ARGV.shift or abort('no command')
FileUtils.mkdir_p(STATE)
$stdout.sync = true

def say(key, value)
  puts "#{key} #{value}"
end

def new_client(key, kid: nil)
  Acme::Client.new(private_key: key, kid: kid,
                   directory: ENV.fetch('ACME_DIRECTORY'),
                   connection_options: {
                     ssl: { ca_file: ENV.fetch('ACME_CA_FILE') }
                   },
                   bad_nonce_retry: 2)
end

# 2.0.9 sends a P-256 JWK coordinate that starts with a zero octet without
# that octet (it goes through a bignum; fixed upstream in 2024), and builds
# its key authorizations from that text: about one key in 128 can never
# enroll, with us (RFC 7518 refuses it) or Let's Encrypt.  An application
# on 2.0.9 meets this as a random failure; the test picks its keys.
def gem_key(short: false)
  loop do
    key = OpenSSL::PKey::EC.generate('prime256v1')
    pt = key.public_key.to_bn.to_s(2)
    return key if (pt[1] == "\x00" || pt[33] == "\x00") == short
  end
end

def account_key
  file = File.join(STATE, 'account.key')
  return OpenSSL::PKey.read(File.read(file)) if File.exist?(file)

  key = gem_key
  File.write(file, key.to_pem)
  key
end

def client
  kid_file = File.join(STATE, 'kid')
  kid = File.exist?(kid_file) ? File.read(kid_file).strip : nil
  new_client(account_key, kid: kid)
end

def save_kid(kid)
  File.write(File.join(STATE, 'kid'), kid)
end

# polls a resource (challenge, authorization, order) out of a state
def wait_while(obj, *states)
  50.times do
    break unless states.include?(obj.status)
    sleep 0.2
    obj.reload
  end
  obj.status
end

# http-01: a bare HTTP server on the lab's port that answers the tokens
# of this run (the gem leaves serving them to the application)
def http01_server(answers)
  srv = TCPServer.new('127.0.0.1', Integer(ENV.fetch('HTTP01_PORT')))
  Thread.new do
    loop do
      sock = begin
        srv.accept
      rescue IOError
        break
      end
      begin
        line = sock.gets.to_s
        while (h = sock.gets) && h != "\r\n" && h != "\n"; end
        token = line[%r{\AGET /\.well-known/acme-challenge/([\w-]+) }, 1]
        body = answers[token]
        if body
          say('served', token)
          sock.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" \
                     "Content-Length: #{body.bytesize}\r\n" \
                     "Connection: close\r\n\r\n#{body}")
        else
          sock.write("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" \
                     "Connection: close\r\n\r\n")
        end
      rescue StandardError
        nil
      ensure
        sock.close
      end
    end
  end
  srv
end

def challtestsrv(path, body)
  uri = URI("#{ENV.fetch('CHALLTESTSRV')}/#{path}")
  res = Net::HTTP.post(uri, JSON.generate(body))
  raise "challtestsrv #{path}: #{res.code}" unless res.is_a?(Net::HTTPSuccess)
end

def issue(type, out, names)
  c = client
  order = c.new_order(identifiers: names)
  say('order', order.status)
  authzs = order.authorizations
  answers = {}
  txt = []
  chals = authzs.map do |az|
    if type == 'http-01'
      ch = az.http01 or raise "no http-01 for #{az.domain}"
      answers[ch.token] = ch.file_content
    else
      ch = az.dns01 or raise "no dns-01 for #{az.domain}"
      host = "#{ch.record_name}.#{az.domain}."
      challtestsrv('set-txt', host: host, value: ch.record_content)
      txt << host
    end
    say('authz', "#{az.domain} wildcard=#{az.wildcard ? 1 : 0}")
    ch
  end
  srv = http01_server(answers) if type == 'http-01'
  chals.each(&:request_validation)
  chals.each do |ch|
    st = wait_while(ch, 'pending', 'processing')
    say('challenge', st)
    raise "challenge #{st}: #{ch.error}" unless st == 'valid'
  end
  srv&.close
  txt.uniq.each { |h| challtestsrv('clear-txt', host: h) }

  key = OpenSSL::PKey::EC.generate('prime256v1')
  csr = Acme::Client::CertificateRequest.new(
    private_key: key, subject: { common_name: names.first }, names: names)
  order.finalize(csr: csr)
  say('order', wait_while(order, 'processing'))
  File.write("#{out}.key", key.to_pem)
  File.write(out, order.certificate)
  say('certificate', out)
end

begin
  case CMD
  when 'register'
    c = client
    say('eab_required', c.external_account_required ? 1 : 0)
    say('tos', c.terms_of_service)
    acct = c.new_account(contact: "mailto:#{ARGV[0]}",
                         terms_of_service_agreed: true)
    save_kid(acct.kid)
    say('kid', acct.kid)
    say('status', acct.status)
    say('contact', acct.contact.join(','))
  when 'issue'
    type, out, *names = ARGV
    issue(type, out, names)
  when 'revoke'
    ok = client.revoke(certificate: File.read(ARGV[0]),
                       reason: Integer(ARGV[1]))
    say('revoked', ok ? 1 : 0)
  when 'update'
    acct = client.account
    acct.update(contact: "mailto:#{ARGV[0]}")
    say('contact', acct.contact.join(','))
  when 'keychange'
    c = client
    kid = c.kid
    old_key = account_key
    # first a key the gem sends short: refused, the account keeps its key
    short = gem_key(short: true)
    begin
      c.account_key_change(new_private_key: short)
      say('short_key', 'changed')
    rescue Acme::Client::Error => e
      say('short_key', "#{e.class.name.split('::').last}: #{e.message}")
    end
    say('short_key_kid', new_client(account_key).kid)
    new_key = gem_key
    c.account_key_change(new_private_key: new_key)
    File.write(File.join(STATE, 'account.key.old'), old_key.to_pem)
    File.write(File.join(STATE, 'account.key'), new_key.to_pem)
    say('changed', kid)
    # the new key finds the account (newAccount, onlyReturnExisting)
    say('new_key_kid', new_client(new_key).kid)
    begin
      new_client(old_key).kid
      say('old_key', 'found')
    rescue Acme::Client::Error => e
      say('old_key', e.class.name.split('::').last)
    end
  when 'deactivate'
    c = client
    acct = c.account_deactivate
    say('status', acct.status)
    begin
      c.new_order(identifiers: ['after.example.com'])
      say('order_after', 'created')
    rescue Acme::Client::Error => e
      say('order_after', e.class.name.split('::').last)
    end
  when 'eab'
    kid, hmac, mail = ARGV
    c = client
    say('eab_required', c.external_account_required ? 1 : 0)
    begin
      c.new_account(contact: "mailto:#{mail}", terms_of_service_agreed: true)
      say('without_eab', 'created')
    rescue Acme::Client::Error => e
      say('without_eab', e.class.name.split('::').last)
    end
    # 2.0.9 has no external_account_binding: argument (2.0.10 added it);
    # the binding is built here as RFC 8555 section 7.3.4 and 2.0.10 do,
    # and posted through the gem's own JWS signer
    hdr = { alg: 'HS256', kid: kid,
            url: c.instance_variable_get(:@directory)
                  .endpoint_for(:new_account) }
    b64 = ->(s) { Acme::Client::Util.urlsafe_base64(s) }
    prot = b64.call(JSON.generate(hdr))
    payload = b64.call(JSON.generate(c.jwk.to_h))
    mac = OpenSSL::HMAC.digest('SHA256', Base64.urlsafe_decode64(
      hmac + '=' * ((4 - hmac.length % 4) % 4)), "#{prot}.#{payload}")
    eab = { protected: prot, payload: payload, signature: b64.call(mac) }
    res = c.send(:post, hdr[:url], mode: :jws,
                 payload: { contact: ["mailto:#{mail}"],
                            termsOfServiceAgreed: true,
                            externalAccountBinding: eab })
    kid_url = res.headers['location']
    save_kid(kid_url)
    say('kid', kid_url)
    say('status', res.body['status'])
  else
    abort("unknown command #{CMD}")
  end
rescue Acme::Client::Error => e
  say('error', "#{e.class.name.split('::').last}: #{e.message}")
  exit 1
end
