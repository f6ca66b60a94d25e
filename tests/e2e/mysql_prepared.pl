#!/usr/bin/perl
# A prepared-statement client for the MySQL end-to-end test and fixtures:
# DBD::MariaDB with server-side prepare sends COM_STMT_PREPARE once, then
# COM_STMT_EXECUTE per call (binary protocol), then COM_STMT_CLOSE.
#   mysql_prepared.pl PORT EXECUTIONS
use strict;
use warnings;
use DBI;

my ($port, $count) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=app;host=127.0.0.1;port=$port;mariadb_server_prepare=1",
    "root", "", { RaiseError => 1, PrintError => 0 });
my $sth = $dbh->prepare("SELECT name FROM t WHERE id = ?");
for my $i (1 .. $count) {
    $sth->execute(1 + $i % 2);
    my @row = $sth->fetchrow_array;
    die "no row for execution $i" unless @row;
}
$sth->finish;
undef $sth;
$dbh->disconnect;
print "executed $count\n";
