
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * GENERATED from dashboard.html by scripts/embed-dashboard.pl: do not edit.
 */


#ifndef _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_
#define _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_


static const char  ngx_http_pki_dashboard_html[] =
    "<!DOCTYPE html>\n"
    "<html><head><meta charset=\"utf-8\"><title>nginx-pki</title></head>\n"
    "<body><p id=\"status\">loading</p></body></html>\n"
    ;


#endif /* _NGX_HTTP_PKI_DASHBOARD_H_INCLUDED_ */
