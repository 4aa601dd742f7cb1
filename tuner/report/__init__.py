"""What a run shows, computed from stored files only: summary and recommended config
(`outputs`), the self-contained HTML report (`html`, `figures`, `points`, `text`), and the
terminal's tables and progress (`table`, `progress`)."""
