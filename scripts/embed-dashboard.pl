#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Turns ngx_pki_module/dashboard.html into the C header the module compiles
# in (ngx_pki_module/ngx_http_pki_dashboard.h).  Run it after editing the
# page; t/metrics.t checks that the header is current.
#
#   perl scripts/embed-dashboard.pl > ngx_pki_module/ngx_http_pki_dashboard.h
use strict;
use warnings;
use FindBin;

my $src = "$FindBin::Bin/../ngx_pki_module/dashboard.html";
open my $fh, '<:raw', $src or die "$src: $!";
local $/;
my $html = <$fh>;
close $fh;

print "\n/*\n * Copyright 2026 The nginx-pki developers\n"
    . " * SPDX-License-Identifier: Apache-2.0\n *\n"
    . " * GENERATED from dashboard.html by scripts/embed-dashboard.pl: "
    . "do not edit.\n */\n\n\n"
    . "#ifndef _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_\n"
    . "#define _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_\n\n\n"
    . "static const char  ngx_http_pki_dashboard_html[] =\n";
for my $line (split /(?<=\n)/, $html) {
    my $s = $line;
    $s =~ s/\\/\\\\/g;
    $s =~ s/"/\\"/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/\t/\\t/g;
    $s =~ s/([^\x20-\x7e])/sprintf("\\%03o", ord($1))/ge;
    $s =~ s/\?\?/?\\?/g;    # no trigraphs
    print "    \"$s\"\n";
}
print "    ;\n\n\n#endif /* _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_ */\n";
