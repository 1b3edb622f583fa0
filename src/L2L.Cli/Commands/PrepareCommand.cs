// `l2l prepare`: tokenizes UTF-8 text files into llm.c train.bin / val.bin.
using System.CommandLine;
using L2L.Model.Data;
using L2L.Model.Tokenizers;

namespace L2L.Cli.Commands;

internal static class PrepareCommand
{
    public static Command Create()
    {
        var inputs = new Argument<string[]>("INPUT") { Description = "UTF-8 text files; each is one document.", Arity = ArgumentArity.OneOrMore };
        var tokenizer = new Option<string>("--tokenizer") { Description = $"Tokenizer: {string.Join(", ", TextTokenizers.Names)}.", DefaultValueFactory = _ => "gpt2" };
        var output = new Option<string>("--out") { Description = "Output directory for train.bin, val.bin and l2l_tokenizer.json.", Required = true };
        var valFraction = new Option<double>("--val-fraction") { Description = "Fraction of the tokens (taken from the end) written to val.bin; 0 for none.", DefaultValueFactory = _ => 0.05 };
        var command = new Command("prepare", "Tokenize text files into llm.c token files for training and validation.");
        command.Arguments.Add(inputs);
        foreach (var o in new Option[] { tokenizer, output, valFraction })
            command.Options.Add(o);
        command.SetAction(parse =>
        {
            var tok = TextTokenizers.ByName(parse.GetValue(tokenizer)!);
            var files = parse.GetValue(inputs)!;
            var result = TextPreparation.Prepare(files, tok, parse.GetValue(output)!, parse.GetValue(valFraction));
            for (var i = 0; i < files.Length; i++)
                Console.WriteLine($"{files[i]}: {result.DocumentTokens[i]:N0} tokens");
            Console.WriteLine($"tokenizer {tok.Name} (vocabulary {tok.VocabSize}, end of text {tok.EndOfTextId})");
            Console.WriteLine($"wrote {result.TrainPath}: {result.TrainTokens:N0} tokens");
            if (result.ValPath is not null)
                Console.WriteLine($"wrote {result.ValPath}: {result.ValTokens:N0} tokens");
            return 0;
        });
        return command;
    }
}
