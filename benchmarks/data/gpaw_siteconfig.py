compiler = 'g++'
